"""The HTML report of a run or a bench: one self-contained file (styles, script and figures inline; opening it
reaches no network), the same facts as the text report plus the per-token expert view and the figures.

``runprof.render(result, format="html")`` and ``--html PATH`` on ``run``, ``bench`` and ``render`` write it.
The output depends only on the result (no clock, fixed figure ids), so rendering a saved result again
gives the same bytes.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import InvalidArgumentError
from ..results import CONVENTIONS, LedgerRow, MemoryLedger, TrackResult
from .causes import LEDGER_ROWS, QUANTITIES, describe
from .format import human_bytes, n, pct
from .html_parts import kv_table, note, page, section, table

MAX_UNUSED_SHOWN = 40


def render_html(result: Any) -> str:
    """The HTML report of a run (:class:`~runprof.results.TrackResult`) or a bench result.

    >>> import runprof
    >>> runprof.render(runprof.count_params("mixtral"), format="html")
    Traceback (most recent call last):
    ...
    runprof.errors.InvalidArgumentError: render(format='html') takes a run or bench result, not CountResult; ...
    """
    from ..routing.bench import BenchResult

    if isinstance(result, TrackResult):
        return render_run_html(result)
    if isinstance(result, BenchResult):
        from .html_bench import render_bench_html

        return render_bench_html(result)
    raise InvalidArgumentError(f"render(format='html') takes a run or bench result, not {type(result).__name__}; "
                               "render it as text (format='text')")


def render_run_html(r: TrackResult) -> str:
    """Summary, per-token view, expert load, repeat rates, distinct experts per decode step, optional FLOPs
    and latency, memory ledger."""
    from .html_figures import decode_parts, load_parts
    from .html_tokens import repeat_section, token_section
    from .plots import short_name

    name = short_name(r.model.name)
    sections = [("summary", "Summary", section("summary", "Summary", *summary_parts(r)))]
    css, script = "", ""
    if r.moe is not None:
        tokens_html, css, script = token_section(r)
        sections += [("per-token", "Per-token experts", tokens_html),
                     ("load", "Expert load", section("load", "Expert load per layer", *load_parts(r))),
                     ("repeats", "Repeat rates", repeat_section(r)),
                     ("decode", "Distinct experts per decode step",
                      section("decode", "Distinct experts per decode step", *decode_parts(r)))]
    for attr, title in (("flops", "FLOPs"), ("latency", "Latency")):
        value = getattr(r.runtime, attr, None)
        if value is not None:
            sections.append((attr, title, section(attr, title, generic_table(value))))
    if r.memory is not None:
        sections.append(("memory", "Memory", section("memory", "Memory", memory_html(r.memory))))
    m = r.model
    facts = [f"{m.class_name} ({m.model_type}), {m.dtype} on {m.device}; {n(r.params.total)} parameters "
             f"({human_bytes(r.bytes.total)})"]
    if "generated_first_line" in r.extra:
        facts.append(f"generated (first line): {r.extra['generated_first_line']!r}")
    return page(f"runprof run: {name}", facts, sections, css=css, script=script)


def summary_parts(r: TrackResult) -> list[str]:
    """What the text summary says: tokens, active params (static vs measured), experts, reconcile, notes."""
    rt = r.runtime
    parts = [kv_table([("prefill tokens", n(rt.tokens.get("prefill", 0))), ("decode tokens", n(rt.tokens.get("decode", 0))),
                       ("forward calls", n(rt.forward_calls)), ("wall time", f"{rt.wall_s:.2f} s")])]
    rows = [[conv, n(r.params.active_per_token[conv]), n(s.mean), n(s.min), n(s.max)]
            for conv in CONVENTIONS for s in [rt.active_params_per_token[conv]]]
    parts.append(table(["active params per token", "static", "measured mean", "min", "max"], rows))
    rows = [[phase, n(s.mean), n(s.min), n(s.max)] for phase, s in rt.active_params_per_token_by_phase.items()
            if s.mean is not None]
    if rows:
        parts.append(table(["by phase (all)", "mean", "min", "max"], rows))
    if r.moe is not None:
        e, k = rt.experts_per_token, rt.top_k
        items = [("MoE layers", f"{r.moe.moe_layers} of {r.moe.num_experts} experts each"),
                 ("experts per token per MoE layer", f"mean {n(e.mean)}, min {n(e.min)}, max {n(e.max)}"),
                 ("top-k", f"config {n(k['config'])}, router {n(k['router'])}, measured {n(k['measured'])}")]
        if rt.params_touched is not None:
            items.append(("params touched over the run", f"{n(rt.params_touched)} of {n(r.params.total)} "
                                                          f"({pct(rt.params_touched, r.params.total)})"))
        parts.append(kv_table(items))
    rows = [[QUANTITIES.get(x.quantity, x.quantity), n(x.static), n(x.measured), n(x.delta), describe(x.cause, x.detail)]
            for x in r.reconcile]
    parts.append(table(["reconcile", "static", "measured", "delta", "note"], rows, left=(0, 4)))
    if rt.unused_modules:
        shown = ", ".join(rt.unused_modules[:MAX_UNUSED_SHOWN]) + (" ..." if len(rt.unused_modules) > MAX_UNUSED_SHOWN
                                                                   else "")
        parts.append(note(f"modules with parameters that never ran ({len(rt.unused_modules)}): {shown}"))
    if "weights_changed" in r.extra:
        changed = r.extra["weights_changed"]
        parts.append(note("weights: " + ("CHANGED during the run" if changed else "unchanged (verified)"),
                          "warn" if changed else "note"))
    parts += [note(f"note: {text}") for text in r.extra.get("notes", ())]
    return parts


def memory_html(memory: MemoryLedger) -> str:
    """The ledger rows (size, share of the GPU where NVML gave its total, source, what the row is)."""
    out = [_ledger_table(memory.rows, f"total of {len(memory.devices)} devices" if len(memory.devices) > 1 else None)]
    if len(memory.devices) > 1:
        out += [_ledger_table(d.rows, f"on {name}") for name, d in memory.devices.items()]
    return "".join(out)


def _ledger_table(rows: tuple[LedgerRow, ...], caption: str | None) -> str:
    total = next((x.bytes for x in rows if x.name == "nvml_device_total"), None)
    cells = [[x.name, human_bytes(x.bytes), *([] if not total else ["" if x.bytes is None else f"{100 * x.bytes / total:.1f}%"]),
              x.source, describe(x.reason, x.detail) if x.reason is not None else LEDGER_ROWS.get(x.name, "")]
             for x in rows]
    headers = ["row", "size", *([] if not total else ["% of GPU"]), "source", "note"]
    return table(headers, cells, left=(0, len(headers) - 2, len(headers) - 1), caption=caption)


def generic_table(value: Any) -> str:
    """Any result part (an object with ``to_dict``, a mapping or a dataclass) as a flat key/value table."""
    import dataclasses

    if hasattr(value, "to_dict"):
        value = value.to_dict()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return kv_table(_flatten(value) if isinstance(value, Mapping) else [("value", _cell(value))])


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in d.items():
        if isinstance(value, Mapping):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", _cell(value)))
    return out


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    return n(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-" if value is None else str(value)


__all__ = ["generic_table", "memory_html", "render_html", "render_run_html", "summary_parts"]
