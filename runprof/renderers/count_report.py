"""Text tables (tabulate) for results: the only place numbers become strings."""
from __future__ import annotations

from typing import Any

from tabulate import tabulate

from ..results import CONVENTIONS, GROUPS, CountResult, TrackResult

_FMT = "simple"


def n(x: int | float | None) -> str:
    """Thousands-separated integer, or a float with 3 decimals; ``None`` as ``-``."""
    if x is None:
        return "-"
    if isinstance(x, float) and not x.is_integer():
        return f"{x:,.3f}"
    return f"{int(x):,}"


def human(x: int | float | None, unit: str = "") -> str:
    """3 significant figures with K/M/B/T (``46.7B``); for bytes use :func:`human_bytes`."""
    if x is None:
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}{unit}"
    return f"{x:g}{unit}"


def human_bytes(x: int | float | None) -> str:
    """Bytes in GiB/MiB/KiB (binary units)."""
    if x is None:
        return "-"
    for scale, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {suffix}"
    return f"{int(x)} B"


def pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.2f}%" if whole else "-"


def _table(rows: list[list[Any]], headers: list[str], align: tuple[str, ...] | None = None) -> str:
    return tabulate(rows, headers=headers, tablefmt=_FMT, colalign=align, disable_numparse=True)


def render_count(r: CountResult, *, layers: bool = True) -> str:
    """The ``count`` report: model, groups with percent, MoE summary, bytes, folded layer table."""
    p = r.params
    out = [f"{r.model.name}  ({r.model.class_name}, model_type {r.model.model_type}, {r.model.dtype}, {r.model.device})"]
    out.append(f"total parameters: {n(p.total)} ({human(p.total)})")
    if p.tied:
        out.append("tied: " + ", ".join(f"{a} = {b}" for a, b in p.tied))
    rows = [[g, n(p.by_group[g]), pct(p.by_group[g], p.total)] for g in GROUPS if p.by_group.get(g)]
    rows.append(["total", n(p.total), pct(p.total, p.total)])
    out += ["", _table(rows, ["group", "params", "share"], ("left", "right", "right"))]

    out += ["", _table(
        [[c, n(p.active_per_token[c]), human(p.active_per_token[c]), pct(p.active_per_token[c], p.total)] for c in CONVENTIONS],
        ["active per token (convention)", "params", "", "of total"], ("left", "right", "right", "right"),
    )]
    if r.moe is not None:
        m = r.moe
        rows = [
            ["MoE layers", n(m.moe_layers)],
            ["experts per layer", n(m.num_experts)],
            ["top-k (router)", n(m.top_k)],
            ["top-k (config)", n(m.top_k_config)],
            ["params per routed expert", n(m.params_per_expert)],
            ["dense layers", ", ".join(map(str, m.dense_layers)) or "none"],
            ["shared-expert params", n(m.shared_experts_params)],
        ]
        out += ["", _table(rows, ["MoE", ""], ("left", "right"))]
    b = r.bytes
    rows = [[d, human_bytes(v), n(v)] for d, v in sorted(b.by_dtype.items())]
    rows.append(["total", human_bytes(b.total), n(b.total)])
    if b.buffers:
        rows.append(["(buffers, not in total)", human_bytes(b.buffers), n(b.buffers)])
    out += ["", _table(rows, ["dtype", "size", "bytes"], ("left", "right", "right"))]
    if layers:
        rows = [[x.name, "x".join(map(str, x.shape)), n(x.count), n(x.params)] for x in p.by_layer_pattern]
        out += ["", _table(rows, ["parameter (layers folded)", "shape", "count", "params"], ("left", "right", "right", "right"))]
    return "\n".join(out)


def render_track(r: TrackResult) -> str:
    """The run report: measured vs static active params, experts per token, expert load, reconcile."""
    from .run_report import render_runtime

    return render_count(r.static, layers=False) + "\n\n" + render_runtime(r)
