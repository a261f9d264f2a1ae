"""The one door to NVML (pynvml, imported lazily) and to ``torch.cuda``'s memory statistics.

Every reading is a ``Reading(value, reason)``: the value in bytes, or ``None`` with why it is unknown
(no GPU, NVML missing, this process not visible to NVML in a container, ...). Nothing here raises for a
missing backend.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger("runprof")


@dataclass(frozen=True)
class Reading:
    """A byte count, or ``None`` with the reason it could not be read."""

    value: int | None
    reason: str = ""


class Nvml:
    """NVML readings for one CUDA device index; every call degrades to a ``Reading(None, reason)``."""

    def __init__(self, index: int) -> None:
        self.index = index
        self._handle: Any = None
        self._module: Any = None
        self.error = ""
        try:
            import pynvml  # the only import of pynvml in runprof

            pynvml.nvmlInit()
            self._module = pynvml
            self._handle = self._find(pynvml, index)
        except Exception as e:  # noqa: BLE001 - ImportError, NVMLError_LibraryNotFound, driver errors...
            self.error = f"NVML unavailable ({type(e).__name__}: {e})"

    @classmethod
    def _find(cls, pynvml: Any, index: int) -> Any:
        """NVML's handle for torch's ``cuda:index``: by the device's UUID (right under any
        ``CUDA_VISIBLE_DEVICES``, UUIDs and MIG included), else by the visible-devices index."""
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

    def device_total(self) -> Reading:
        if self._handle is None:
            return Reading(None, self.error)
        return Reading(int(self._module.nvmlDeviceGetMemoryInfo(self._handle).total))

    def device_used(self) -> Reading:
        if self._handle is None:
            return Reading(None, self.error)
        return Reading(int(self._module.nvmlDeviceGetMemoryInfo(self._handle).used))

    def process_used(self) -> Reading:
        """This process's GPU memory; in a container whose PIDs NVML cannot see, None with the reason."""
        if self._handle is None:
            return Reading(None, self.error)
        try:
            procs = self._module.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except Exception as e:  # noqa: BLE001
            return Reading(None, f"NVML process list unavailable ({e})")
        mine = [p for p in procs if p.pid == os.getpid()]
        if not mine or mine[0].usedGpuMemory is None:
            return Reading(None, f"this process (pid {os.getpid()}) is not in NVML's process list (container PID "
                                 f"namespace?); device-level figures only")
        return Reading(int(mine[0].usedGpuMemory))


class NvmlPoller:
    """Polls NVML's used memory from a background thread (no host sync in the model's stream)."""

    def __init__(self, nvml: Nvml, interval_s: float = 0.05) -> None:
        self.nvml, self.interval_s = nvml, interval_s
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runprof-nvml", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            reading = self.nvml.process_used()
            if reading.value is None:
                reading = self.nvml.device_used()
            if reading.value is not None:
                self.peak = max(self.peak or 0, reading.value)
            self._stop.wait(self.interval_s)

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
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return Reading(None, "/proc/self/status unavailable"), Reading(peak)
