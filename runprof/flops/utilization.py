"""Bytes each step moves and how close a run came to the device's peaks.

Bytes of one step = the weights every step reads (all but the routed experts and an untied input embedding,
whose rows are looked up) + the distinct experts the step touched in each MoE layer × that layer's bytes per
expert (every row computed counts: padding pulls its experts in too) + the KV cache read: each attention layer's
keys (the eager path's key length) × batch × bytes per cached position. Activations are not counted: at decode
they are a few rows; this is the traffic that bounds MoE decode.
"""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..results import Cause, Stat, StepRecord
from ..results.flops import FLOP_PHASES, FlopsInfo, UtilizationInfo
from ..results.perf import LatencyInfo
from .counting import StepPlan
from .peaks import lookup
from .structure import ModelFlops

if TYPE_CHECKING:
    from ..tracking.collectors import StepMeta


def step_bytes(mf: ModelFlops, m: StepMeta, touched: Sequence[int], plan: StepPlan | None = None) -> int:
    """Bytes one step reads (see the module docstring; ``plan``: :meth:`StepPlan.of` of ``mf``, computed once)."""
    plan = plan or StepPlan.of(mf, ())
    past = max(m.context - m.seq, 0)
    experts = sum(map(operator.mul, touched, plan.bytes_per_expert)) + plan.dense_expert_bytes
    kv = sum(m.batch * core.keys(past, m.seq) * b for core, b in zip(plan.classes, plan.kv_bytes))
    return mf.shared_weight_bytes + experts + kv


def device_name(device: torch.device) -> str | None:
    """The CUDA device's marketing name (``NVIDIA H200``), None elsewhere."""
    if device.type != "cuda":
        return None
    try:
        return torch.cuda.get_device_name(device)
    except Exception:  # noqa: BLE001 - a device that cannot be queried has no name, not a crash
        return None


def _forward_s(latency: LatencyInfo | None, timed_all: bool) -> dict[str, float | None]:
    if latency is None or not timed_all:
        return dict.fromkeys(FLOP_PHASES)
    t = {"prefill": latency.prefill_forward_s, "decode": latency.decode_forward_s, "train": latency.train_forward_s}
    return {ph: t[ph].total if t[ph].count else None for ph in FLOP_PHASES}


def _ratio(a: float | int | None, b: float | int | None) -> float | None:
    return a / b if a is not None and b else None


def _peaks(name: str | None, dtype: str, given: tuple[float | None, float | None]) -> tuple[Any, ...]:
    peak = lookup(name, dtype, tf32=torch.get_float32_matmul_precision() != "highest")
    flops = given[0] if given[0] is not None else (peak.flops_per_s if peak else None)
    bw = given[1] if given[1] is not None else (peak.bytes_per_s if peak else None)
    source = {"flops": "given" if given[0] is not None else "table" if flops is not None else None,
              "bandwidth": "given" if given[1] is not None else "table" if bw is not None else None,
              "entry": peak.entry if peak else None}
    return flops, bw, source, None if flops is not None and bw is not None else Cause.PEAK_UNKNOWN


def utilization(mf: ModelFlops, flops: FlopsInfo | None, meta: Sequence[StepMeta], records: Sequence[StepRecord],
                latency: LatencyInfo | None, *, device: torch.device, dtype: str, n_steps: int,
                peaks: tuple[float | None, float | None] = (None, None)) -> UtilizationInfo:
    """Achieved FLOP/s, MFU, bytes moved and bandwidth utilization per phase of one run."""
    name = device_name(device)
    peak_flops, peak_bw, source, cause = _peaks(name, dtype, peaks)
    timed_all = latency is not None and latency.steps_timed == len(meta) == n_steps
    forward = _forward_s(latency, timed_all)
    plan = StepPlan.of(mf, ())
    by_step = [step_bytes(mf, m, r.experts_touched, plan) for m, r in zip(meta, records)] \
        if len(records) == len(meta) == n_steps else None
    moved = {ph: None if by_step is None else sum(b for b, m in zip(by_step, meta) if m.phase == ph)
             for ph in FLOP_PHASES}
    done = {ph: None if flops is None else flops.by_phase.get(ph) for ph in FLOP_PHASES}
    fps = {ph: _ratio(done[ph], forward[ph]) for ph in FLOP_PHASES}
    bps = {ph: _ratio(moved[ph], forward[ph]) for ph in FLOP_PHASES}
    decode = Stat.of([b for b, m in zip(by_step or (), meta) if m.phase == "decode"])
    return UtilizationInfo(
        device=str(device), device_name=name, dtype=dtype, peak_flops_per_s=peak_flops, peak_bytes_per_s=peak_bw,
        peak_source=source, cause=cause, forward_s=forward, flops_per_s=fps,
        mfu={ph: _ratio(fps[ph], peak_flops) for ph in FLOP_PHASES}, bytes=moved, bytes_per_s=bps,
        bandwidth_utilization={ph: _ratio(bps[ph], peak_bw) for ph in FLOP_PHASES},
        intensity={ph: _ratio(done[ph], moved[ph]) for ph in FLOP_PHASES}, decode_bytes_per_step=decode,
        time_cause=None if timed_all else Cause.NOT_TIMED)


__all__ = ["device_name", "step_bytes", "utilization"]
