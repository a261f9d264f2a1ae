"""The run report's newer detail sections: latency (and FLOPs), per-layer load statistics, per-step records."""
from __future__ import annotations

from ..results import TrackResult
from ..results.frames import records
from .flops_report import render_perf
from .format import n, table, wrap

MAX_STEP_ROWS = 40
"""Per-step rows shown (the first ones; ``--csv`` and ``to_dataframe("steps")`` have every kept step)."""


def render_latency(r: TrackResult, width: int | None = None) -> str:
    """FLOPs, latency and utilization (the FLOPs report's section)."""
    return render_perf(r, width)


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
    headers = ["layer", "assigned", "min\n%", "max\n%", "max/\nmean", "CV", "entropy", "unused",
               "distinct\nper step"]
    text = table(cells, headers, ("left",) + ("right",) * 8, width=width, wrap_cols=(0,))
    note = (f"shares in % of the layer's assignments (uniform {_share(rows[0]['uniform_share'])}%); entropy "
            "normalized by ln E; unused: experts no token chose; distinct per step: distinct experts per decode "
            "step, mean over the decode steps")
    return "\n".join([text, *wrap(note, width)])


def render_steps(r: TrackResult, width: int | None = None) -> str:
    """The per-step records (the first :data:`MAX_STEP_ROWS`): phase, tokens, experts touched per layer."""
    steps = r.runtime.steps
    if not steps:
        return ""
    cells = [[str(i), s.phase, n(s.tokens), " ".join(str(x) for x in s.experts_touched),
              n(s.active_params_per_token_mean), n(s.params_touched)] for i, s in enumerate(steps[:MAX_STEP_ROWS])]
    text = table(cells, ["step", "phase", "tokens", "experts touched\nper layer", "active/\ntoken", "params\ntouched"],
                 ("right", "left", "right", "left", "right", "right"), width=width, wrap_cols=(3,))
    more = len(steps) - MAX_STEP_ROWS
    note = ("tokens: real tokens (padding and rows after EOS excluded); experts and params touched: every row "
            "computed (padding pulls its experts in too); active/token: mean over the step's real tokens")
    return "\n".join([text, *([f"... {more} more steps (--csv DIR, to_dataframe('steps'))"] if more > 0 else []),
                      *wrap(note, width)])


__all__ = ["MAX_STEP_ROWS", "render_latency", "render_layers", "render_steps"]
