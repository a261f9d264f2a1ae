"""Text report of a :class:`~runprof.results.CountResult` (the ``count`` command's output)."""
from __future__ import annotations

from ..results import CONVENTIONS, GROUPS, CountResult
from .format import human, human_bytes, n, pct, table, terminal_width, wrap


def render_count(r: CountResult, *, layers: bool = True, width: int | None = None) -> str:
    """The ``count`` report: model, groups with percent, MoE summary, bytes, folded layer table, fitted to
    ``width`` (the terminal's when None)."""
    width = terminal_width() if width is None else width
    p = r.params
    out = wrap(f"{r.model.name}  ({r.model.class_name}, model_type {r.model.model_type}, {r.model.dtype}, "
               f"{r.model.device})", width)
    out.append(f"total parameters: {n(p.total)} ({human(p.total)})")
    if p.tied:
        out += wrap("tied: " + ", ".join(f"{a} = {b}" for a, b in p.tied), width)
    rows = [[g, n(p.by_group[g]), pct(p.by_group[g], p.total)] for g in GROUPS if p.by_group.get(g)]
    rows.append(["total", n(p.total), pct(p.total, p.total)])
    out += ["", table(rows, ["group", "params", "share"], ("left", "right", "right"))]

    out += ["", table(
        [[c, n(p.active_per_token[c]), human(p.active_per_token[c]), pct(p.active_per_token[c], p.total)] for c in CONVENTIONS],
        ["active per token (convention)", "params", "short", "of total"], ("left", "right", "right", "right"),
    )]
    if r.moe is not None:
        m = r.moe
        rows = [
            ["MoE layers", n(m.moe_layers)],
            ["experts per layer", n(m.num_experts)],
            ["top-k (router)", n(m.top_k)],
            ["top-k (config)", n(m.top_k_config)],
            ["params per routed expert", n(m.params_per_expert)],
            ["dense layers (indices)", ", ".join(map(str, m.dense_layers)) or "none"],
            ["shared-expert params", n(m.shared_experts_params)],
        ]
        out += ["", table(rows, ["MoE", ""], ("left", "right"))]
    b = r.bytes
    rows = [[d, human_bytes(v), n(v)] for d, v in sorted(b.by_dtype.items())]
    rows.append(["total", human_bytes(b.total), n(b.total)])
    if b.buffers:
        rows.append(["(buffers, not in total)", human_bytes(b.buffers), n(b.buffers)])
    out += ["", table(rows, ["dtype", "size", "bytes"], ("left", "right", "right"))]
    q = b.quantization
    if q is not None:
        head = f"quantization ({q['method']}, from the config): "
        if q["applied"]:
            line = head + f"{n(q['quantized_params'])} parameters at their stored size"
        elif q.get("reason") == "loaded":
            line = head + "bytes of the tensors as loaded"
        else:
            line = head + "not sized by runprof; bytes are unquantized"
        out += wrap(line, width)
    if layers:
        rows = [[x.name, "x".join(map(str, x.shape)), n(x.count), n(x.params)] for x in p.by_layer_pattern]
        out += ["", table(rows, ["parameter (layers folded)", "shape", "count", "params"],
                          ("left", "right", "right", "right"), width=width, wrap_cols=(0,))]
    return "\n".join(out)


__all__ = ["render_count"]
