"""Figures and tables of a run for the HTML report: expert load per layer, distinct experts per decode step.

Figures are inline SVG (:func:`runprof.renderers.plots.figure_svg`); without matplotlib each figure's place
says how to get it and the tables stay.
"""
from __future__ import annotations

from typing import Any, Callable

from ..results import TrackResult
from .html_parts import esc, note, table

NEEDS_MATPLOTLIB = "Figures need matplotlib: pip install runprof[plot] (the tables hold the same numbers)."
LINES_MAX = 8  # layers drawn one line each in the decode figure; more are drawn as their mean and range


def figures_available() -> bool:
    """Whether matplotlib can be imported (figures are drawn) or not (the report says how to get them)."""
    from ..errors import InvalidArgumentError
    from .plots import require_matplotlib

    try:
        require_matplotlib()
    except InvalidArgumentError:
        return False
    return True


def figure_or_note(build: Callable[[], Any], caption: str) -> str:
    """``<figure>`` with the inline SVG of ``build()`` and its caption, or the note that figures need matplotlib."""
    if not figures_available():
        return note(NEEDS_MATPLOTLIB)
    from .plots import figure_svg

    return f"<figure>{figure_svg(build())}<figcaption>{esc(caption)}</figcaption></figure>"


def load_parts(r: TrackResult) -> list[str]:
    """The expert-load heatmap (share of assignments per layer and expert) and a per-layer summary table."""
    from .plots import load_heatmap, short_name

    loads = r.runtime.expert_load
    if not loads or not any(sum(x) for x in loads):
        return [note("expert load: no routing captured")]
    shares = [[x / (sum(load) or 1) for x in load] for load in loads]
    rows = []
    for name, load, share in zip(r.runtime.moe_layer_names, loads, shares):
        rows.append([name, f"{sum(load):,}", f"{100 * min(share):.1f}%", f"{100 * max(share):.1f}%",
                     f"{max(share) * len(share):.2f}", f"{sum(1 for x in load if x)} of {len(load)}",
                     f"{100 / len(load):.2f}%"])
    headers = ["layer", "assignments", "min share", "max share", "max/mean", "experts used", "uniform"]
    fig = figure_or_note(lambda: load_heatmap([("all tokens of the run", shares)],
                                              f"{short_name(r.model.name)}: expert load per layer"),
                         "share of each layer's assignments per expert (a token routed to k experts counts k times)")
    return [fig, table(headers, rows)]


def decode_parts(r: TrackResult) -> list[str]:
    """Distinct experts per decode step and layer (each step's expert weight traffic) vs uniform routing."""
    from ..routing.baselines import expected_distinct

    decode = [s for s in r.runtime.steps if s.phase == "decode"]
    if not decode or r.moe is None:
        return [note("no decode steps recorded (a run without generate, or a merge across ranks keeps no steps)")]
    k = r.runtime.top_k.get("measured") or r.moe.top_k or 1
    experts = [layer.num_experts for layer in r.moe.layers] or [r.moe.num_experts]
    rows = []
    for j, name in enumerate(r.runtime.moe_layer_names):
        values = [s.experts_touched[j] for s in decode if j < len(s.experts_touched)]
        if not values:
            continue
        e = experts[min(j, len(experts) - 1)]
        uniform = sum(expected_distinct(e, min(k, e), max(s.tokens, 1)) for s in decode) / len(decode)
        rows.append([name, f"{sum(values) / len(values):.2f}", min(values), max(values), f"{uniform:.2f}", e])
    headers = ["layer", "mean", "min", "max", "uniform E(1-(1-k/E)^B)", "experts"]
    fig = figure_or_note(lambda: decode_figure(r, decode, k),
                         f"{len(decode)} decode steps; dashed: uniform routing of each step's tokens")
    return [fig, table(headers, rows)]


def decode_figure(r: TrackResult, decode: list[Any], k: int) -> Any:
    """Distinct experts per decode step: one line per layer (their mean and range past ``LINES_MAX`` layers)."""
    from ..routing.baselines import expected_distinct
    from .plots import new_figure, short_name, thin_ticks

    fig = new_figure(8.0, 3.0)
    ax = fig.subplots()
    steps = list(range(1, len(decode) + 1))
    names = r.runtime.moe_layer_names
    series = [[s.experts_touched[j] for s in decode] for j in range(len(names))]
    if len(series) <= LINES_MAX:
        for name, values in zip(names, series):
            ax.plot(steps, values, marker=".", linewidth=1, label=name)
    else:
        lo = [min(col) for col in zip(*series)]
        hi = [max(col) for col in zip(*series)]
        ax.fill_between(steps, lo, hi, alpha=0.25, label=f"min-max over {len(series)} layers")
        ax.plot(steps, [sum(col) / len(col) for col in zip(*series)], label="mean over layers")
    e = r.moe.num_experts
    ax.plot(steps, [expected_distinct(e, min(k, e), max(s.tokens, 1)) for s in decode], "k--", linewidth=1,
            label="uniform routing")
    ax.set_xlabel("decode step", fontsize=8)
    ax.set_ylabel("distinct experts", fontsize=8)
    ax.set_ylim(0, e + 0.5)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"{short_name(r.model.name)}: distinct experts per decode step (of {e})", fontsize=10)
    return thin_ticks(fig)


__all__ = ["NEEDS_MATPLOTLIB", "decode_figure", "decode_parts", "figure_or_note", "figures_available", "load_parts"]
