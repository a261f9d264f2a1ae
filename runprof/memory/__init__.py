"""Memory ledger: the only importer of pynvml and caller of ``torch.cuda`` memory APIs."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .ledger import GpuReadings, build_ledger, cache_bytes, kv_estimate, ledger_total, weight_bytes
from .sources import Nvml, NvmlPoller, Reading, cuda_stats, reset_cuda_peak


def _cuda_device(model: nn.Module) -> torch.device | None:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None and first.device.type == "cuda" else None


class MemoryCollector:
    """Used by ``track(model, memory=True)``: readings at start, NVML polled in a thread, readings at exit.

    Torch peaks are read at exit only, so the tracked region gains no host synchronization.
    """

    def __init__(self, model: nn.Module, *, interval_s: float = 0.05,
                 static_bytes: tuple[int, int] | None = None) -> None:
        self.model = model
        self.static_bytes = static_bytes
        self.device = _cuda_device(model)
        self.cache: Any = None
        self.tokens_cached = 0
        self._start: dict[str, int] | None = None
        self._end: dict[str, int] | None = None
        self._nvml: Nvml | None = None
        self._poller: NvmlPoller | None = None
        self._nvml_used = Reading(None, "not read")
        self.interval_s = interval_s

    def __enter__(self) -> MemoryCollector:
        if self.device is not None:
            torch.cuda.synchronize(self.device)
            self._start = cuda_stats(self.device)
            reset_cuda_peak(self.device)
            self._nvml = Nvml(self.device.index or 0)
            self._poller = NvmlPoller(self._nvml, self.interval_s).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device is not None:
            torch.cuda.synchronize(self.device)
            self._end = cuda_stats(self.device)
            if self._poller is not None:
                self._poller.__exit__(*exc)
            self._nvml_used = self._nvml.process_used() if self._nvml else Reading(None, "no NVML")

    def ledger(self) -> dict[str, Any]:
        """The ledger for this run (call after exit)."""
        gpu = None
        if self.device is not None and self._start is not None and self._end is not None:
            nv = self._nvml
            gpu = GpuReadings(
                allocated_start=Reading(self._start["allocated"]),
                allocated_end=Reading(self._end["allocated"]),
                reserved_end=Reading(self._end["reserved"]),
                peak_allocated=Reading(self._end["peak_allocated"]),
                nvml_used=self._nvml_used,
                nvml_peak=Reading(self._poller.peak, "" if self._poller and self._poller.peak else "no NVML reading"),
                nvml_total=nv.device_total() if nv else Reading(None, "no NVML"),
            )
        return build_ledger(self.model, gpu=gpu, gpu_reason="model is on the CPU: no GPU rows",
                            cache=self.cache, tokens_cached=self.tokens_cached, static_bytes=self.static_bytes)


def memory_ledger(model: nn.Module, *, cache: Any = None, tokens_cached: int = 0) -> dict[str, Any]:
    """A standalone snapshot ledger of ``model`` now (no run): static rows, allocator and NVML figures.

    >>> import torch
    >>> rows = memory_ledger(torch.nn.Linear(4, 4))["rows"]
    >>> next(r["bytes"] for r in rows if r["name"] == "weights")  # (16 + 4) x 4 bytes
    80
    """
    device = _cuda_device(model)
    gpu = None
    if device is not None:
        torch.cuda.synchronize(device)
        stats = cuda_stats(device)
        nv = Nvml(device.index or 0)
        gpu = GpuReadings(Reading(stats["allocated"]), Reading(stats["allocated"]), Reading(stats["reserved"]),
                          Reading(stats["peak_allocated"]), nv.process_used(), Reading(None, "snapshot: not polled"),
                          nv.device_total())
    return build_ledger(model, gpu=gpu, gpu_reason="model is on the CPU: no GPU rows", cache=cache,
                        tokens_cached=tokens_cached)


__all__ = ["GpuReadings", "MemoryCollector", "Reading", "build_ledger", "cache_bytes", "kv_estimate",
           "ledger_total", "memory_ledger", "weight_bytes"]
