"""The memory ledger: static bytes, the torch allocator and NVML, with every gap named.

Rows marked ``part`` add up to the ``nvml_used`` total (this process's GPU memory as NVML sees it):

    weights + buffers + other_at_load + kv_cache + runprof_capture + other_after_run + allocator_slack
      + cuda_context_and_other = nvml_used

where ``other_at_load`` = torch allocated at start − weights − buffers, ``other_after_run`` = allocated at the
end − allocated at start − kv_cache − runprof_capture (tensors the run left alive: logits, outputs), ``allocator_slack`` =
reserved − allocated, ``cuda_context_and_other`` = NVML used − reserved (CUDA context, cuBLAS workspaces,
other libraries). The last is the named remainder. Information rows (``part`` false) sit beside them:
``torch_allocated`` (after load), ``kv_cache_estimate`` (from the config), ``activations_peak`` (peak
allocated during the run − allocated at start − runprof_capture), ``nvml_peak``, ``nvml_device_used`` (every process: the
figure left where a container hides this process from NVML) and ``nvml_device_total``. On CPU the GPU rows
are null with the cause, and ``process_rss``/``process_rss_peak`` come from /proc.

A model on several GPUs (accelerate's ``device_map``) gets one ledger per device in ``devices`` (each device's
resident weights, buffers and cache tensors against that device's allocator and NVML figures) and, in
``rows``, their total: each row summed over the devices (null when any device's figure is). ``weights`` counts
the parameters resident where the ledger looks (the GPUs; on CPU every non-meta parameter) and
``weights_offloaded`` the rest (parameters on ``meta`` that accelerate loads at each forward from CPU or
disk, or left on the CPU): the two add up to the static parameter bytes.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..results import Cause, LedgerRow, MemoryLedger
from ..tensors import tensor_bytes
from .kv import cache_bytes_by_device, kv_estimate
from .sources import Reading, process_rss


@dataclass(frozen=True)
class GpuReadings:
    """What the torch allocator and NVML said for one device (injectable in tests)."""

    allocated_start: Reading
    allocated_end: Reading
    reserved_end: Reading
    peak_allocated: Reading
    nvml_used: Reading
    nvml_peak: Reading = field(default_factory=lambda: Reading.unknown(Cause.NOT_POLLED))
    nvml_total: Reading = field(default_factory=lambda: Reading.unknown(Cause.NOT_READ))
    nvml_device_used: Reading = field(default_factory=lambda: Reading.unknown(Cause.NOT_READ))


def bytes_by_device(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(parameter bytes, buffer bytes) of the unique tensors on each device (``meta``: not resident)."""
    out: dict[str, list[int]] = {}
    for p in model.parameters():
        out.setdefault(str(p.device), [0, 0])[0] += tensor_bytes(p)
    for b in model.buffers():
        out.setdefault(str(b.device), [0, 0])[1] += b.numel() * b.element_size()
    return {k: (v[0], v[1]) for k, v in out.items()}


def _row(name: str, reading: Reading | int | None, source: str, part: bool = False,
         cause: Cause | None = None, **detail: Any) -> LedgerRow:
    if isinstance(reading, Reading):
        return LedgerRow(name, reading.value, source, part, reading.cause or cause,
                         dict(reading.detail) if reading.cause else detail)
    return LedgerRow(name, reading, source, part, cause, detail)


def _diff(a: Reading, b: Reading | int | None, what: str) -> Reading:
    """``a − b``, or the first term's cause when either is unknown."""
    bv = b.value if isinstance(b, Reading) else b
    if a.value is not None and bv is not None:
        return Reading(a.value - bv)
    for r in (a, b):
        if isinstance(r, Reading) and r.value is None and r.cause is not None:
            return r
    return Reading.unknown(Cause.UNKNOWN_INPUT, what=what)


def build_ledger(model: nn.Module, *, gpu: Mapping[str, GpuReadings] | None, cache: Any = None,
                 positions: int = 0, batch: int = 1, resident: Mapping[str, tuple[int, int]] | None = None,
                 capture: Mapping[str, int] | None = None) -> MemoryLedger:
    """The ledger: ``gpu`` is None (a model on the CPU: GPU rows null with ``Cause.NOT_CUDA``) or readings per
    device (``{"cuda:0": ..., "cuda:1": ...}``: each device's ledger counts the tensors on that device; ``rows``
    is their total). ``resident`` is :func:`bytes_by_device` when the caller already has it, so the parameters
    are walked once. ``capture`` is runprof's own bytes per device (the ``runprof_capture`` row: counters,
    staging and trace buffers, allocated after the start readings, so never booked as the model's)."""
    capture = dict(capture or {})
    by_dev = dict(resident) if resident is not None else bytes_by_device(model)
    total_params = sum(p for p, _ in by_dev.values())
    kv_dev = cache_bytes_by_device(cache)
    kv_cause = None if kv_dev is not None else Cause.NO_CACHE
    kv_dev = kv_dev or {}
    first = next(iter(model.parameters()), None)
    config = getattr(model, "config", None)
    estimate = Reading.unknown(Cause.NO_CONFIG) if config is None else \
        kv_estimate(config, positions, first.element_size() if first is not None else 2, batch)
    if gpu is None:
        on = {d: v for d, v in by_dev.items() if d != "meta"}
        weights, buffers = sum(p for p, _ in on.values()), sum(b for _, b in on.values())
        rows = _static_rows(weights, buffers, _row("kv_cache", sum(kv_dev.values()), "cache", True, kv_cause),
                            estimate)
        rows.append(_row("runprof_capture", sum(capture.values()), "runprof"))
        rows.append(_offloaded_row(total_params - weights, by_dev, on))
        rss, peak = process_rss()
        rows += [_row(n, None, s, p, Cause.NOT_CUDA) for n, s, p in (
            ("torch_allocated", "torch.cuda", False), ("activations_peak", "torch.cuda", False),
            ("allocator_slack", "torch.cuda", True), ("cuda_context_and_other", "nvml", True),
            ("nvml_used", "nvml", False))]
        rows += [_row("process_rss", rss, "/proc"), _row("process_rss_peak", peak, "/proc")]
        return MemoryLedger(tuple(rows))
    devices = {}
    for d, readings in gpu.items():
        p, b = by_dev.get(d, (0, 0))
        kv = _row("kv_cache", kv_dev.get(d, 0), "cache", True, kv_cause)
        rows = _static_rows(p, b, kv, Reading.unknown(Cause.ESTIMATE_IN_TOTAL))
        own = capture.get(d, 0)
        rows.append(_row("runprof_capture", own, "runprof", True))
        devices[d] = MemoryLedger(tuple(rows + _gpu_rows(p + b, (kv.bytes or 0) + own, own, readings)))
    total = _sum_rows(devices)
    total = [_row("kv_cache_estimate", estimate, "static") if r.name == "kv_cache_estimate" else r for r in total]
    on_gpus = sum(by_dev.get(d, (0, 0))[0] for d in gpu)
    total.insert(5, _offloaded_row(total_params - on_gpus, by_dev, gpu))
    return MemoryLedger(tuple(total), devices)


def _static_rows(weights: int, buffers: int, kv: LedgerRow, estimate: Reading) -> list[LedgerRow]:
    return [_row("weights", weights, "static", True), _row("buffers", buffers, "static", True), kv,
            _row("kv_cache_estimate", estimate, "static")]


def _offloaded_row(offloaded: int, by_dev: Mapping[str, tuple[int, int]], counted: Any) -> LedgerRow:
    places = {d: p for d, (p, _) in sorted(by_dev.items()) if d not in counted and p}
    if not places:
        return _row("weights_offloaded", offloaded, "static", False, Cause.ALL_RESIDENT)
    return _row("weights_offloaded", offloaded, "static", False, Cause.OFFLOADED, places=places,
                meta="meta" in by_dev)


def _gpu_rows(resident: int, kept: int, own: int, gpu: GpuReadings) -> list[LedgerRow]:
    """``kept``: bytes the run left that have rows of their own (cache, runprof's capture); ``own``: runprof's."""
    start = gpu.allocated_start
    run_base = Reading(start.value + kept) if start.value is not None else start
    peak_base = Reading(start.value + own) if start.value is not None else start
    return [
        _row("torch_allocated", start, "torch.cuda"),
        _row("other_at_load", _diff(start, resident, "allocated"), "torch.cuda", True),
        _row("other_after_run", _diff(gpu.allocated_end, run_base, "allocated"), "torch.cuda", True),
        _row("activations_peak", _diff(gpu.peak_allocated, peak_base, "peak"), "torch.cuda"),
        _row("allocator_slack", _diff(gpu.reserved_end, gpu.allocated_end, "reserved"), "torch.cuda", True),
        _row("cuda_context_and_other", _diff(gpu.nvml_used, gpu.reserved_end, "NVML used"), "nvml", True),
        _row("nvml_used", gpu.nvml_used, "nvml"),
        _row("nvml_peak", gpu.nvml_peak, "nvml"),
        _row("nvml_device_used", gpu.nvml_device_used, "nvml"),
        _row("nvml_device_total", gpu.nvml_total, "nvml"),
    ]


def _sum_rows(devices: Mapping[str, MemoryLedger]) -> list[LedgerRow]:
    """Row by row, the sum over devices (null with the first unknown device's cause when any figure is)."""
    if len(devices) == 1:
        return list(next(iter(devices.values())).rows)
    total = []
    for rows in zip(*(d.rows for d in devices.values())):
        missing = next(((name, r) for name, r in zip(devices, rows) if r.bytes is None), None)
        if missing:
            name, r = missing
            total.append(LedgerRow(r.name, None, r.source, r.part, Cause.DEVICE_UNKNOWN,
                                   {"device": name, "cause": r.reason.value if r.reason else None, **r.detail}))
        else:
            total.append(LedgerRow(rows[0].name, sum(r.bytes for r in rows), rows[0].source, rows[0].part,
                                   Cause.SUM_OVER_DEVICES, {"devices": list(devices)}))
    return total
