"""Text report of a tracked run: the summary first (:mod:`.summary`), then the detail sections asked for.

Sections (``show=``, or all of them with ``full=True``), in this order: ``active`` (active params per token
by convention and phase), ``load`` (experts per token and the per-layer expert load), ``modules`` (modules
that never ran), ``reconcile``, ``memory``, ``latency`` (FLOPs and latency), ``layers`` (per-layer load
statistics), ``steps`` (per-step records). The static tables stay in the ``count`` report.
"""
from __future__ import annotations

from typing import Iterable

from ..errors import InvalidArgumentError
from ..results import CONVENTIONS, LedgerRow, MemoryLedger, TrackResult
from .causes import LEDGER_ROWS, QUANTITIES, describe
from .format import human_bytes, n, pct, table, terminal_width, wrap
from .run_sections import render_latency, render_layers, render_steps
from .summary import render_summary

SECTIONS: tuple[str, ...] = ("active", "load", "modules", "reconcile", "memory", "latency", "layers", "steps")
"""The detail sections of a run report, in the order they print."""


def check_sections(show: Iterable[str]) -> tuple[str, ...]:
    """``show`` as a tuple of known section names (an unknown one is an error naming them all)."""
    names = tuple(s.strip() for s in show if s.strip())
    for s in names:
        if s not in SECTIONS:
            raise InvalidArgumentError.bad("show", s, f"the sections are {', '.join(SECTIONS)} (or --full / full=True for all)")
    return names


def render_track(r: TrackResult, *, full: bool = False, show: Iterable[str] = (), width: int | None = None) -> str:
    """The run report: the summary, then the detail sections in ``show`` (every one with ``full``), each
    fitted to ``width`` (the terminal's when None).

    >>> print(render_track(result, show=["reconcile"], width=80))  # doctest: +SKIP
    """
    width = terminal_width() if width is None else width
    wanted = SECTIONS if full else check_sections(show)
    out = [render_summary(r, width)]
    for name in SECTIONS:
        if name in wanted:
            text = _SECTION[name](r, width)
            if text:
                out.append(text)
    return "\n\n".join(out)


def render_runtime(r: TrackResult, width: int | None = None) -> str:
    """Every detail section, without the summary."""
    return "\n\n".join(t for t in (_SECTION[name](r, width) for name in SECTIONS) if t)


def _active(r: TrackResult, width: int | None) -> str:
    rt = r.runtime
    out = [f"tokens: prefill {n(rt.tokens.get('prefill', 0))}, decode {n(rt.tokens.get('decode', 0))} "
           f"in {n(rt.forward_calls)} forward calls ({rt.wall_s:.2f} s)"]
    rows = []
    for conv in CONVENTIONS:
        s, static = rt.active_params_per_token[conv], r.params.active_per_token[conv]
        rows.append([conv, n(static), n(s.mean), n(s.min), n(s.max)])
    out += ["", table(rows, ["active params per token", "static", "measured mean", "min", "max"],
                      ("left", "right", "right", "right", "right"), width=width, wrap_cols=(0,))]
    rows = [[phase, n(s.mean), n(s.min), n(s.max)] for phase, s in rt.active_params_per_token_by_phase.items()
            if s.mean is not None]
    if rows:
        out += ["", table(rows, ["by phase (all)", "mean", "min", "max"], ("left", "right", "right", "right"))]
    return "\n".join(out)


def _load(r: TrackResult, width: int | None) -> str:
    if r.moe is None:
        return ""
    rt = r.runtime
    e, k = rt.experts_per_token, rt.top_k
    out = [*wrap(f"experts per token per MoE layer: mean {n(e.mean)}, min {n(e.min)}, max {n(e.max)}; "
                 f"top-k config {n(k['config'])}, router {n(k['router'])}, measured {n(k['measured'])}", width),
           "", render_expert_load(r, width=width)]
    decode = [s for s in rt.steps if s.phase == "decode"]
    if decode:
        mean_touched = sum(sum(s.experts_touched) for s in decode) / (len(decode) * max(len(rt.expert_load), 1))
        out += wrap(f"decode steps: {len(decode)}, distinct experts touched per step and layer: {mean_touched:.2f} "
                    f"of {r.moe.num_experts}", width)
    if rt.params_touched is not None:
        out += wrap(f"params touched over the run: {n(rt.params_touched)} of {n(r.params.total)} "
                    f"({pct(rt.params_touched, r.params.total)})", width)
    return "\n".join(out)


def _modules(r: TrackResult, width: int | None) -> str:
    unused = r.runtime.unused_modules
    if not unused:
        return ""
    shown = ", ".join(unused[:8]) + (" ..." if len(unused) > 8 else "")
    return "\n".join(wrap(f"modules with parameters that never ran ({len(unused)}): {shown}", width))


def _reconcile(r: TrackResult, width: int | None) -> str:
    rows = [[QUANTITIES.get(x.quantity, x.quantity), n(x.static), n(x.measured), n(x.delta),
             describe(x.cause, x.detail)] for x in r.reconcile]
    return table(rows, ["reconcile", "static", "measured", "delta", "note"],
                 ("left", "right", "right", "right", "left"), width=width, wrap_cols=(0, -1))


def _memory(r: TrackResult, width: int | None) -> str:
    return "" if r.memory is None else render_memory(r.memory, width=width)


def render_expert_load(r: TrackResult, max_experts: int = 16, *, width: int | None = None) -> str:
    """Per-layer load share of each expert, with the uniform share 1/E beside it (as many experts as fit
    ``width``, at most ``max_experts``)."""
    loads = r.runtime.expert_load
    if not loads:
        return "expert load: no routing captured"
    e = len(loads[0])
    shown = min(e, max_experts)
    while True:
        rows = []
        for name, load in zip(r.runtime.moe_layer_names, loads):
            total = sum(load) or 1
            shares = [f"{100 * x / total:.0f}" for x in load[:shown]]
            rows.append([name, n(sum(load)), *shares, f"{100 * max(load) / total:.0f}"])
        headers = ["expert load % (layer)", "assignments", *[f"e{i}" for i in range(shown)], "max"]
        text = table(rows, headers)
        if width is None or shown <= 1 or max(len(x) for x in text.splitlines()) <= width:
            break
        shown -= 1
    note = f"uniform share: {100 / e:.1f}% per expert" + (f" (first {shown} of {e} experts shown)" if shown < e else "")
    return text + "\n" + note


def render_memory(memory: MemoryLedger, *, width: int | None = None) -> str:
    """The ledger table (sizes with their share of the GPU's memory when NVML gave its total); under a device
    map, the total first and then one table per device. Rows that do not apply (no figure, with a cause) are
    left out of the table and named in one line per cause below it."""
    title = f"memory (total of {len(memory.devices)} devices)" if len(memory.devices) > 1 else "memory"
    out = [_memory_table(memory.rows, title, width)]
    if len(memory.devices) > 1:
        out += [_memory_table(d.rows, f"memory on {name}", width) for name, d in memory.devices.items()]
    return "\n\n".join(out)


def _note(row: LedgerRow) -> str:
    return describe(row.reason, row.detail) if row.reason is not None else LEDGER_ROWS.get(row.name, "")


def _memory_table(rows: tuple[LedgerRow, ...], title: str, width: int | None) -> str:
    absent = [r for r in rows if r.bytes is None and r.reason is not None]
    rows = tuple(r for r in rows if r not in absent)
    total = next((r.bytes for r in rows if r.name == "nvml_device_total"), None)
    if not total:
        cells = [[r.name, human_bytes(r.bytes), r.source, _note(r)] for r in rows]
        text = table(cells, [title, "size", "source", "note"], ("left", "right", "left", "left"), width=width)
    else:
        cells = [[r.name, human_bytes(r.bytes), "" if r.bytes is None else f"{100 * r.bytes / total:.1f}%",
                  r.source, _note(r)] for r in rows]
        text = table(cells, [title, "size", "% of GPU", "source", "note"], ("left", "right", "right", "left", "left"),
                     width=width)
    by_note: dict[str, list[str]] = {}
    for r in absent:
        by_note.setdefault(_note(r), []).append(r.name)
    lines = [piece for note, names in by_note.items()
             for piece in wrap(f"not shown ({note}): {', '.join(names)}", width)]
    return "\n".join([text, *lines])


_SECTION = {"active": _active, "load": _load, "modules": _modules, "reconcile": _reconcile, "memory": _memory,
            "latency": render_latency, "layers": render_layers, "steps": render_steps}

__all__ = ["SECTIONS", "check_sections", "render_expert_load", "render_memory", "render_runtime", "render_track"]
