"""Text section of a tracked run's FLOPs, latency and utilization (the run report's detail view embeds it)."""
from __future__ import annotations

from ..results import Cause, TrackResult
from ..results.flops import FLOP_PHASES, FlopsInfo, UtilizationInfo
from ..results.perf import LatencyInfo
from .causes import describe
from .format import human, human_bytes, n, pct, rate, seconds, table, wrap

NOT_COVERED_SHOWN = 8


def render_perf(r: TrackResult, width: int | None = None) -> str:
    """FLOPs (by phase, by group, per row, not covered), latency (time to first token, decode step) and
    utilization (FLOP/s, MFU, bytes moved, bandwidth) of one run, each ``-`` with its reason when unknown."""
    rt = r.runtime
    return "\n\n".join([_flops(rt.flops, r, width), render_latency_table(rt.latency, width),
                        _utilization(rt.utilization, width)])


def _why_no_flops(r: TrackResult) -> str:
    obs = r.runtime.observation
    if not obs.complete:
        return describe(Cause.ROUTING_NOT_OBSERVED, {"layer_steps": obs.missed_layer_steps + obs.misaligned_layer_steps,
                                                     "steps": obs.steps})
    if r.moe is not None and not r.runtime.expert_load:
        return describe(Cause.NOT_MEASURED)
    return "the model's structure could not be read, or rows ran outside a forward of the model (see the log)"


def _flops(f: FlopsInfo | None, r: TrackResult, width: int | None) -> str:
    if f is None:
        return "\n".join(wrap(f"FLOPs: not measured ({_why_no_flops(r)})", width))
    out = [*wrap(f"FLOPs: {n(f.total)} ({human(f.total)}; attention core causal, as MFU counts it); "
           f"{n(f.total_eager_attention)} ({human(f.total_eager_attention)}) with the core as the eager path "
           "computes it (the whole masked matrix)", width)]
    phases = [[ph, n(f.by_phase.get(ph, 0)), pct(f.by_phase.get(ph, 0), f.total)] for ph in FLOP_PHASES
              if f.by_phase.get(ph)]
    groups = [[g, n(v), pct(v, f.total)] for g, v in f.by_group.items() if v]
    out += ["", table(phases, ["FLOPs by phase", "FLOPs", "share"], ("left", "right", "right")),
            "", table(groups, ["FLOPs by group", "FLOPs", "share"], ("left", "right", "right"))]
    s = f.per_token
    if s.count:
        out += ["", *wrap(f"per row computed ({n(s.count)} rows, padding included): mean {n(round(s.mean))}; "
                          f"lightest step {n(s.min)}, heaviest step {n(s.max)} per row", width)]
    if f.not_covered:
        shown = ", ".join(f.not_covered[:NOT_COVERED_SHOWN]) + (" ..." if len(f.not_covered) > NOT_COVERED_SHOWN
                                                                else "")
        out += wrap(f"not covered ({len(f.not_covered)} modules; their linear weights are counted, their own "
                f"recurrence, convolution or attention kind is not): {shown}", width)
    return "\n".join(out)


def render_latency_table(lat: LatencyInfo | None, width: int | None = None) -> str:
    """Time to first token, prefill and decode forwards, decode steps: count, median, p90, min, max, total."""
    if lat is None:
        return "\n".join(wrap("latency: not kept (a result merged across ranks or runs, or no forward call timed)",
                              width))
    rows = []
    for label, t in (("time to first token", lat.ttft_s), ("prefill forward", lat.prefill_forward_s),
                     ("decode forward", lat.decode_forward_s), ("decode step (forward + sampling)", lat.decode_step_s),
                     ("training forward", lat.train_forward_s)):
        if t.count:
            rows.append([label, n(t.count), seconds(t.median), seconds(t.p90), seconds(t.min), seconds(t.max),
                         seconds(t.total)])
    text = table(rows, ["latency", "count", "median", "p90", "min", "max", "total"],
                 ("left",) + ("right",) * 6, width=width, wrap_cols=(0,)) if rows else "latency: no forward call timed"
    rates = [f"{what} {rate(x)} tokens/s" for what, x in (("prefill", lat.prefill_tokens_per_s),
                                                          ("decode", lat.decode_tokens_per_s)) if x is not None]
    tail = f"clock: {lat.clock}, {n(lat.steps_timed)} forward calls timed" + (f"; {', '.join(rates)}" if rates else "")
    return "\n".join([text, *wrap(tail, width)])


def si_rate(x: float | None, unit: str) -> str:
    """A rate with an SI prefix: ``si_rate(9.894e14, "FLOP/s")`` is ``'989 TFLOP/s'``; None is ``-``."""
    if x is None:
        return "-"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3g}%"


def _utilization(u: UtilizationInfo | None, width: int | None) -> str:
    if u is None:
        return "utilization: not measured"
    where = u.device + (f" ({u.device_name})" if u.device_name else "")
    src = u.peak_source
    peaks = (f"peaks: {si_rate(u.peak_flops_per_s, 'FLOP/s')} ({src.get('flops') or 'unknown'}), "
             f"{si_rate(u.peak_bytes_per_s, 'B/s')} ({src.get('bandwidth') or 'unknown'})"
             + (f", table entry {src['entry']}" if src.get("entry") else ""))
    out = wrap(f"utilization on {where}, {u.dtype}; {peaks}", width)
    rows = []
    for ph in FLOP_PHASES:
        if u.forward_s.get(ph) is None and u.bytes.get(ph) in (None, 0):
            continue
        t = u.forward_s.get(ph)
        rows.append([ph, "-" if t is None else f"{t:.4f}", si_rate(u.flops_per_s.get(ph), "FLOP/s"),
                     _ratio(u.mfu.get(ph)), human_bytes(u.bytes.get(ph)), si_rate(u.bytes_per_s.get(ph), "B/s"),
                     _ratio(u.bandwidth_utilization.get(ph)),
                     "-" if u.intensity.get(ph) is None else f"{u.intensity[ph]:.2f}"])
    if rows:
        headers = ["phase", "forward\ns", "achieved", "MFU", "bytes\nmoved", "bytes/s", "BW\nused", "FLOP/B"]
        out += ["", table(rows, headers, ("left",) + ("right",) * 7)]
    d = u.decode_bytes_per_step
    if d.count:
        out += wrap(f"decode bytes per step (non-expert weights + experts touched + KV read): mean "
                    f"{human_bytes(d.mean)}, min {human_bytes(d.min)}, max {human_bytes(d.max)} over {n(d.count)} steps",
                    width)
    out += [line for c in (u.cause, u.time_cause) if c is not None for line in wrap(f"note: {describe(c)}", width)]
    return "\n".join(out)


__all__ = ["render_latency_table", "render_perf", "si_rate"]
