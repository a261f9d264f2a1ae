"""The run report's newer detail sections: latency (and FLOPs), per-layer load statistics, per-step records."""
from __future__ import annotations

from typing import Any

from ..results import TrackResult
from ..results.frames import records
from .format import n, rate, seconds, table, wrap

MAX_STEP_ROWS = 40
"""Per-step rows shown (the first ones; ``--csv`` and ``to_dataframe("steps")`` have every kept step)."""


def _perf_renderer() -> Any:
    """``render_perf`` of the FLOPs report, where that renderer exists in this version."""
    try:
        from .flops_report import render_perf  # type: ignore[import-not-found]
    except ImportError:
        return None
    return render_perf


def render_latency(r: TrackResult, width: int | None = None) -> str:
    """FLOPs and latency: the FLOPs report's section when runprof has one, else the latency table."""
    perf = _perf_renderer()
    if perf is not None and getattr(r.runtime, "flops", None) is not None:
        return perf(r)
    lat = r.runtime.latency
    if lat is None:
        return "\n".join(wrap("latency: not kept (a result merged across ranks or runs)", width))
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


def _share(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def render_layers(r: TrackResult, width: int | None = None) -> str:
    """Load statistics per MoE layer (shares in %, max/mean, coefficient of variation, normalized entropy)."""
    rows = records(r, "layers")
    if not rows:
        return ""
    cells = [[x["layer"] if x["layer_index"] is None else str(x["layer_index"]), n(x["assignments"]),
              _share(x["min_share"]), _share(x["max_share"]), _f(x["max_over_mean"]), _f(x["cv"]),
              _f(x["entropy_normalized"], 3), n(x["unused_experts"]), _f(x["decode_distinct_mean"])] for x in rows]
    headers = ["layer", "assigned", "min\n%", "max\n%", "max/\nmean", "CV", "entropy", "unused\nexperts",
               "distinct\nper step"]
    text = table(cells, headers, ("left",) + ("right",) * 8, width=width, wrap_cols=(0,))
    note = (f"shares in % of the layer's assignments (uniform {_share(rows[0]['uniform_share'])}%); entropy "
            "normalized by ln E; distinct per step: distinct experts per decode step, mean over the decode steps")
    return "\n".join([text, *wrap(note, width)])


def render_steps(r: TrackResult, width: int | None = None) -> str:
    """The per-step records (the first :data:`MAX_STEP_ROWS`): phase, tokens, experts touched per layer."""
    steps = r.runtime.steps
    if not steps:
        return ""
    cells = [[str(i), s.phase, n(s.tokens), " ".join(str(x) for x in s.experts_touched),
              n(s.active_params_per_token_mean), n(s.params_touched)] for i, s in enumerate(steps[:MAX_STEP_ROWS])]
    text = table(cells, ["step", "phase", "tokens", "experts touched per layer", "active/token", "params touched"],
                 ("right", "left", "right", "left", "right", "right"), width=width, wrap_cols=(3,))
    more = len(steps) - MAX_STEP_ROWS
    return text + ("\n" + f"... {more} more steps (--csv DIR, to_dataframe('steps'))" if more > 0 else "")


__all__ = ["MAX_STEP_ROWS", "render_latency", "render_layers", "render_steps"]
