"""Memory ledger: the only importer of pynvml and caller of ``torch.cuda`` memory APIs."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .ledger import (
    GpuReadings,
    build_ledger,
    bytes_by_device,
    cache_bytes,
    kv_estimate,
    ledger_total,
)
from .sources import Nvml, NvmlPoller, Reading, cuda_stats, reset_cuda_peak


def cuda_devices(resident: dict[str, tuple[int, int]]) -> list[torch.device]:
    """The CUDA devices in :func:`bytes_by_device`'s answer (several under a device map)."""
    return sorted((torch.device(d) for d in resident if d.startswith("cuda")), key=lambda d: d.index or 0)


class MemoryCollector:
    """Used by ``track(model, memory=True)``: readings at start, NVML polled in a thread, readings at exit,
    for every CUDA device the model sits on.

    Torch peaks are read at exit only, so the tracked region gains no host synchronization.
    """

    def __init__(self, model: nn.Module, *, interval_s: float = 0.05) -> None:
        self.model = model
        self.resident = bytes_by_device(model)  # the one walk over the parameters, before the run
        self.devices = cuda_devices(self.resident)
        self.cache: Any = None
        self.positions = 0  # tokens cached per sequence
        self.batch = 1
        self._start: dict[str, dict[str, int]] = {}
        self._end: dict[str, dict[str, int]] = {}
        self._nvml: dict[str, Nvml] = {}
        self._pollers: dict[str, NvmlPoller] = {}
        self._nvml_used: dict[str, Reading] = {}
        self._device_used: dict[str, Reading] = {}
        self.interval_s = interval_s

    def __enter__(self) -> MemoryCollector:
        for dev in self.devices:
            torch.cuda.synchronize(dev)
            self._start[str(dev)] = cuda_stats(dev)
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

    def ledger(self) -> dict[str, Any]:
        """The ledger for this run (call after exit)."""
        gpu = None
        if self.devices and len(self._end) == len(self.devices):
            gpu = {}
            for key, start in self._start.items():
                end, nv, peak = self._end[key], self._nvml[key], self._pollers[key].peak
                gpu[key] = GpuReadings(
                    allocated_start=Reading(start["allocated"]),
                    allocated_end=Reading(end["allocated"]),
                    reserved_end=Reading(end["reserved"]),
                    peak_allocated=Reading(end["peak_allocated"]),
                    nvml_used=self._nvml_used.get(key, Reading(None, "not read")),
                    nvml_peak=Reading(peak, "" if peak else "no NVML reading"),
                    nvml_total=nv.device_total(),
                    nvml_device_used=self._device_used.get(key, Reading(None, "not read")),
                )
        return build_ledger(self.model, gpu=gpu, gpu_reason="model is on the CPU: no GPU rows",
                            cache=self.cache, positions=self.positions, batch=self.batch,
                            resident=self.resident)


def memory_ledger(model: nn.Module, *, cache: Any = None, positions: int = 0, batch: int = 1) -> dict[str, Any]:
    """A standalone snapshot ledger of ``model`` now (no run): static rows, allocator and NVML figures.

    >>> import torch
    >>> rows = memory_ledger(torch.nn.Linear(4, 4))["rows"]
    >>> next(r["bytes"] for r in rows if r["name"] == "weights")  # (16 + 4) x 4 bytes
    80
    """
    resident = bytes_by_device(model)
    gpu = {}
    for device in cuda_devices(resident):
        torch.cuda.synchronize(device)
        stats = cuda_stats(device)
        nv = Nvml(device.index or 0)
        gpu[str(device)] = GpuReadings(
            Reading(stats["allocated"]), Reading(stats["allocated"]), Reading(stats["reserved"]),
            Reading(stats["peak_allocated"]), nv.process_used(), Reading(None, "snapshot: not polled"),
            nv.device_total(), nv.device_used())
    return build_ledger(model, gpu=gpu or None, gpu_reason="model is on the CPU: no GPU rows", cache=cache,
                        positions=positions, batch=batch, resident=resident)


__all__ = ["GpuReadings", "MemoryCollector", "Reading", "build_ledger", "bytes_by_device", "cache_bytes",
           "cuda_devices", "kv_estimate", "ledger_total", "memory_ledger"]
