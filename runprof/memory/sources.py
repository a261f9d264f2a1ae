"""The one door to NVML (pynvml, imported lazily) and to ``torch.cuda``'s memory statistics.

Every reading is a ``Reading(value, cause, detail)``: the value in bytes, or ``None`` with a
:class:`~runprof.results.Cause` saying why it is unknown (no GPU, NVML missing, this process not visible
to NVML in a container, ...). Nothing here raises: not for a missing backend, not for an NVML error in the
middle of a run, not inside the polling thread.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from ..results import Cause

log = logging.getLogger("runprof")


@dataclass(frozen=True)
class Reading:
    """A byte count, or ``None`` with the cause (and its numbers) why it could not be read."""

    value: int | None
    cause: Cause | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def unknown(cls, cause: Cause, **detail: Any) -> Reading:
        return cls(None, cause, detail)


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


class Nvml:
    """NVML readings for one CUDA device index; every call degrades to a ``Reading(None, cause)``.

    ``module`` is pynvml (injectable in tests). The handle is found by the device's UUID, so it is right
    under any ``CUDA_VISIBLE_DEVICES`` and names the MIG slice (``MIG-...``) under MIG; memory is read with
    ``nvmlMemory_v2`` where the driver has it (v1 counts driver-reserved memory as used).
    """

    def __init__(self, index: int, module: Any = None) -> None:
        self.index = index
        self._handle: Any = None
        self._module: Any = None
        self.error = ""
        try:
            if module is None:
                import pynvml as module  # the only import of pynvml in runprof

            module.nvmlInit()
            self._module = module
            self._handle = self._find(module, index)
        except Exception as e:  # noqa: BLE001 - ImportError, NVMLError_LibraryNotFound, driver errors...
            self.error = _error(e)

    @classmethod
    def _find(cls, pynvml: Any, index: int) -> Any:
        """NVML's handle for torch's ``cuda:index``: by the device's UUID (``GPU-...`` or ``MIG-...``),
        else by the visible-devices index."""
        try:
            uuid = str(torch.cuda.get_device_properties(index).uuid)
            return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        except Exception:  # noqa: BLE001 - no CUDA in torch, an old driver, a MIG slice NVML names otherwise
            return pynvml.nvmlDeviceGetHandleByIndex(cls._physical_index(index))

    @staticmethod
    def _physical_index(index: int) -> int:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        ids = [x.strip() for x in visible.split(",") if x.strip()]
        return int(ids[index]) if index < len(ids) and ids[index].isdigit() else index

    def _memory_info(self) -> Any:
        m = self._module
        version = getattr(m, "nvmlMemory_v2", None)
        if version is not None:
            try:
                return m.nvmlDeviceGetMemoryInfo(self._handle, version=version)
            except TypeError:  # an nvidia-ml-py without the version argument
                pass
        return m.nvmlDeviceGetMemoryInfo(self._handle)

    def _read(self, what: Callable[[Any], int]) -> Reading:
        if self._handle is None:
            return Reading.unknown(Cause.NVML_UNAVAILABLE, error=self.error)
        try:
            return Reading(int(what(self._memory_info())))
        except Exception as e:  # noqa: BLE001 - NVMLError_* (GPU lost, not supported, ...)
            return Reading.unknown(Cause.NVML_UNAVAILABLE, error=_error(e))

    def device_total(self) -> Reading:
        return self._read(lambda info: info.total)

    def device_used(self) -> Reading:
        return self._read(lambda info: info.used)

    def process_used(self) -> Reading:
        """This process's GPU memory; in a container whose PIDs NVML cannot see, None with the cause."""
        if self._handle is None:
            return Reading.unknown(Cause.NVML_UNAVAILABLE, error=self.error)
        try:
            procs = self._module.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except Exception as e:  # noqa: BLE001
            return Reading.unknown(Cause.NVML_PROCESS_LIST_UNAVAILABLE, error=_error(e))
        mine = [p for p in procs if getattr(p, "pid", None) == os.getpid()]
        used = getattr(mine[0], "usedGpuMemory", None) if mine else None
        if not isinstance(used, int):
            return Reading.unknown(Cause.NVML_PROCESS_HIDDEN, pid=os.getpid())
        return Reading(used)


class NvmlPoller:
    """Polls NVML's used memory from a background thread (no host sync in the model's stream). A failure in
    the thread ends the polling and is kept in ``error``; nothing propagates out of ``__exit__``."""

    def __init__(self, nvml: Nvml, interval_s: float = 0.05, *, wait: Callable[[float], bool] | None = None) -> None:
        self.nvml, self.interval_s = nvml, interval_s
        self.peak: int | None = None
        self.samples = 0
        self.error = ""
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait  # injectable clock for tests
        self._thread = threading.Thread(target=self._run, name="runprof-nvml", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                reading = self.nvml.process_used()
                if reading.value is None:
                    reading = self.nvml.device_used()
                if reading.value is not None:
                    self.peak = max(self.peak or 0, reading.value)
                self.samples += 1
                if self._wait(self.interval_s):
                    break
        except Exception as e:  # noqa: BLE001 - never let a reading kill the thread silently
            self.error = _error(e)
            log.warning("NVML polling stopped: %s", self.error)

    def reading(self) -> Reading:
        """The peak polled, or why there is none."""
        if self.peak is not None:
            return Reading(self.peak)
        if self.error:
            return Reading.unknown(Cause.NVML_UNAVAILABLE, error=self.error)
        return Reading.unknown(Cause.NVML_NO_READING)

    def __enter__(self) -> NvmlPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def cuda_stats(device: torch.device) -> dict[str, int]:
    """``torch.cuda`` allocator figures for ``device`` (allocated, reserved, peak allocated)."""
    return {
        "allocated": int(torch.cuda.memory_allocated(device)),
        "reserved": int(torch.cuda.memory_reserved(device)),
        "peak_allocated": int(torch.cuda.max_memory_allocated(device)),
    }


def reset_cuda_peak(device: torch.device) -> None:
    """Reset torch's peak counters of ``device`` (``max_memory_allocated`` and friends: the caller's too)."""
    torch.cuda.reset_peak_memory_stats(device)


def process_rss() -> tuple[Reading, Reading]:
    """(current RSS, peak RSS) of this process from /proc, or from ``resource`` where /proc is absent."""
    try:
        fields = {}
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                fields[key] = rest.split()
        return Reading(int(fields["VmRSS"][0]) * 1024), Reading(int(fields["VmHWM"][0]) * 1024)
    except (OSError, KeyError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return Reading.unknown(Cause.PROC_UNAVAILABLE), Reading(peak)
