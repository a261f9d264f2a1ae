"""The memory collector of ``track(model, memory=True)``: allocator readings at start and exit, NVML polled
in a background thread, for every CUDA device the model sits on; the ledger built from them at the end."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InvalidArgumentError
from ..results import Cause, MemoryLedger
from .ledger import GpuReadings, build_ledger, bytes_by_device
from .sources import Nvml, NvmlPoller, Reading, cuda_stats, reset_cuda_peak


def cuda_devices(resident: dict[str, tuple[int, int]]) -> list[torch.device]:
    """The CUDA devices in :func:`bytes_by_device`'s answer (several under a device map)."""
    return sorted((torch.device(d) for d in resident if d.startswith("cuda")), key=lambda d: d.index or 0)


class MemoryCollector:
    """Readings at start (one synchronize per device, before the region), NVML polled in a thread, readings
    at exit. Torch's peaks are read at exit only, so the tracked region gains no host synchronization.

    ``reset_peak`` (default) resets torch's peak counter of each device at start, so ``activations_peak`` is
    the run's own peak; this also resets the caller's ``torch.cuda.max_memory_allocated``. With
    ``reset_peak=False`` the caller's counters are left alone and the run's peak is known only when it
    exceeds the peak before the run (else the row is null with ``Cause.PEAK_BEFORE_RUN``).
    """

    def __init__(self, model: nn.Module, *, interval_s: float = 0.05, reset_peak: bool = True,
                 resident: dict[str, tuple[int, int]] | None = None) -> None:
        self.model = model
        # the one walk over the parameters, before the run (``resident``: the caller's, when it has one)
        self.resident = bytes_by_device(model) if resident is None else resident
        self.devices = cuda_devices(self.resident)
        self.interval_s, self.reset_peak = interval_s, reset_peak
        self._start: dict[str, dict[str, int]] = {}
        self._end: dict[str, dict[str, int]] = {}
        self._nvml: dict[str, Nvml] = {}
        self._pollers: dict[str, NvmlPoller] = {}
        self._nvml_used: dict[str, Reading] = {}
        self._device_used: dict[str, Reading] = {}

    def __enter__(self) -> MemoryCollector:
        for dev in self.devices:
            torch.cuda.synchronize(dev)
            self._start[str(dev)] = cuda_stats(dev)
            if self.reset_peak:
                reset_cuda_peak(dev)
            self._nvml[str(dev)] = Nvml(dev.index or 0)
        for key, nv in self._nvml.items():
            self._pollers[key] = NvmlPoller(nv, self.interval_s).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for dev in self.devices:
            torch.cuda.synchronize(dev)
            self._end[str(dev)] = cuda_stats(dev)
        for key, poller in self._pollers.items():
            poller.__exit__(*exc)
            self._nvml_used[key] = self._nvml[key].process_used()
            self._device_used[key] = self._nvml[key].device_used()

    def _peak(self, key: str) -> Reading:
        start, end = self._start[key], self._end[key]
        if self.reset_peak or end["peak_allocated"] > start["peak_allocated"]:
            return Reading(end["peak_allocated"])
        return Reading.unknown(Cause.PEAK_BEFORE_RUN, peak_before=start["peak_allocated"])

    def ledger(self, *, cache: Any = None, positions: int = 0, batch: int = 1,
               capture: dict[str, int] | None = None) -> MemoryLedger:
        """The ledger of this run (call after exit): ``cache`` is the cache object the run returned,
        ``positions`` the tokens cached per sequence, ``batch`` the sequences, ``capture`` runprof's own
        bytes per device."""
        gpu = None
        if self.devices and len(self._end) == len(self.devices):
            gpu = {key: GpuReadings(
                allocated_start=Reading(start["allocated"]),
                allocated_end=Reading(self._end[key]["allocated"]),
                reserved_end=Reading(self._end[key]["reserved"]),
                peak_allocated=self._peak(key),
                nvml_used=self._nvml_used.get(key, Reading.unknown(Cause.NOT_READ)),
                nvml_peak=self._pollers[key].reading(),
                nvml_total=self._nvml[key].device_total(),
                nvml_device_used=self._device_used.get(key, Reading.unknown(Cause.NOT_READ)),
            ) for key, start in self._start.items()}
        return build_ledger(self.model, gpu=gpu, cache=cache, positions=positions, batch=batch,
                            resident=self.resident, capture=capture)


def memory_ledger(model: nn.Module, *, cache: Any = None, positions: int = 0, batch: int = 1) -> MemoryLedger:
    """A standalone snapshot ledger of ``model`` now (no run): static rows, allocator and NVML figures.

    >>> import torch
    >>> memory_ledger(torch.nn.Linear(4, 4)).row("weights").bytes  # (16 + 4) x 4 bytes
    80
    """
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"memory_ledger takes a torch.nn.Module, not {type(model).__name__}")
    resident = bytes_by_device(model)
    gpu = {}
    for device in cuda_devices(resident):
        torch.cuda.synchronize(device)
        stats = cuda_stats(device)
        nv = Nvml(device.index or 0)
        gpu[str(device)] = GpuReadings(
            Reading(stats["allocated"]), Reading(stats["allocated"]), Reading(stats["reserved"]),
            Reading(stats["peak_allocated"]), nv.process_used(), Reading.unknown(Cause.SNAPSHOT_NOT_POLLED),
            nv.device_total(), nv.device_used())
    return build_ledger(model, gpu=gpu or None, cache=cache, positions=positions, batch=batch, resident=resident)
