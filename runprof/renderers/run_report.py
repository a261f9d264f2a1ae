"""Text report of a tracked run: measured vs static active params, per-layer expert load, reconcile, memory."""
from __future__ import annotations

from ..results import CONVENTIONS, LedgerRow, MemoryLedger, TrackResult
from .causes import LEDGER_ROWS, QUANTITIES, describe
from .count_report import render_count
from .format import human_bytes, n, pct, table


def render_track(r: TrackResult) -> str:
    """The run report: the static counts (without the layer table), then what the run measured."""
    return render_count(r.static, layers=False) + "\n\n" + render_runtime(r)


def render_runtime(r: TrackResult) -> str:
    """What ran: tokens, active params per token by convention and phase, experts, load, reconcile, memory."""
    rt = r.runtime
    out = [f"tokens: prefill {n(rt.tokens.get('prefill', 0))}, decode {n(rt.tokens.get('decode', 0))} "
           f"in {n(rt.forward_calls)} forward calls ({rt.wall_s:.2f} s)"]
    rows = []
    for conv in CONVENTIONS:
        s, static = rt.active_params_per_token[conv], r.params.active_per_token[conv]
        rows.append([conv, n(static), n(s.mean), n(s.min), n(s.max)])
    out += ["", table(rows, ["active params per token", "static", "measured mean", "min", "max"],
                      ("left", "right", "right", "right", "right"))]
    rows = [[phase, n(s.mean), n(s.min), n(s.max)] for phase, s in rt.active_params_per_token_by_phase.items()
            if s.mean is not None]
    if rows:
        out += ["", table(rows, ["by phase (all)", "mean", "min", "max"], ("left", "right", "right", "right"))]
    if r.moe is not None:
        out += ["", *_moe_lines(r)]
    if rt.unused_modules:
        shown = ", ".join(rt.unused_modules[:8]) + (" ..." if len(rt.unused_modules) > 8 else "")
        out += ["", f"modules with parameters that never ran ({len(rt.unused_modules)}): {shown}"]
    rows = [[QUANTITIES.get(x.quantity, x.quantity), n(x.static), n(x.measured), n(x.delta),
             describe(x.cause, x.detail)] for x in r.reconcile]
    out += ["", table(rows, ["reconcile", "static", "measured", "delta", "note"],
                      ("left", "right", "right", "right", "left"))]
    if r.memory is not None:
        out += ["", render_memory(r.memory)]
    if "weights_changed" in r.extra:
        out += ["", "weights: " + ("CHANGED during the run" if r.extra["weights_changed"] else "unchanged (verified)")]
    out += [f"note: {note}" for note in r.extra.get("notes", ())]
    if "generated_first_line" in r.extra:
        out.append(f"generated (first line): {r.extra['generated_first_line']!r}")
    return "\n".join(out)


def _moe_lines(r: TrackResult) -> list[str]:
    rt = r.runtime
    e, k = rt.experts_per_token, rt.top_k
    out = [f"experts per token per MoE layer: mean {n(e.mean)}, min {n(e.min)}, max {n(e.max)}; "
           f"top-k config {n(k['config'])}, router {n(k['router'])}, measured {n(k['measured'])}",
           "", render_expert_load(r)]
    decode = [s for s in rt.steps if s.phase == "decode"]
    if decode:
        mean_touched = sum(sum(s.experts_touched) for s in decode) / (len(decode) * max(len(rt.expert_load), 1))
        out.append(f"decode steps: {len(decode)}, distinct experts touched per step and layer: {mean_touched:.2f} "
                   f"of {r.moe.num_experts}")
    if rt.params_touched is not None:
        out.append(f"params touched over the run: {n(rt.params_touched)} of {n(r.params.total)} "
                   f"({pct(rt.params_touched, r.params.total)})")
    return out


def render_expert_load(r: TrackResult, max_experts: int = 16) -> str:
    """Per-layer load share of each expert, with the uniform share 1/E beside it."""
    loads = r.runtime.expert_load
    if not loads:
        return "expert load: no routing captured"
    e = len(loads[0])
    shown = min(e, max_experts)
    rows = []
    for name, load in zip(r.runtime.moe_layer_names, loads):
        total = sum(load) or 1
        shares = [f"{100 * x / total:.0f}" for x in load[:shown]]
        rows.append([name, n(sum(load)), *shares, f"{100 * max(load) / total:.0f}"])
    headers = ["expert load % (layer)", "assignments", *[f"e{i}" for i in range(shown)], "max"]
    note = f"uniform share: {100 / e:.1f}% per expert" + (f" (first {shown} of {e} experts shown)" if shown < e else "")
    return table(rows, headers) + "\n" + note


def render_memory(memory: MemoryLedger) -> str:
    """The ledger table (sizes with their share of the GPU's memory when NVML gave its total); under a device
    map, the total first and then one table per device."""
    title = f"memory (total of {len(memory.devices)} devices)" if len(memory.devices) > 1 else "memory"
    out = [_memory_table(memory.rows, title)]
    if len(memory.devices) > 1:
        out += [_memory_table(d.rows, f"memory on {name}") for name, d in memory.devices.items()]
    return "\n\n".join(out)


def _note(row: LedgerRow) -> str:
    return describe(row.reason, row.detail) if row.reason is not None else LEDGER_ROWS.get(row.name, "")


def _memory_table(rows: tuple[LedgerRow, ...], title: str) -> str:
    total = next((r.bytes for r in rows if r.name == "nvml_device_total"), None)
    if not total:
        cells = [[r.name, human_bytes(r.bytes), r.source, _note(r)] for r in rows]
        return table(cells, [title, "size", "source", "note"], ("left", "right", "left", "left"))
    cells = [[r.name, human_bytes(r.bytes), "" if r.bytes is None else f"{100 * r.bytes / total:.1f}%",
              r.source, _note(r)] for r in rows]
    return table(cells, [title, "size", "% of GPU", "source", "note"], ("left", "right", "right", "left", "left"))


__all__ = ["render_expert_load", "render_memory", "render_runtime", "render_track"]
