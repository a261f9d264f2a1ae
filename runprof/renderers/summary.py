"""The first answer first: a tracked run in at most 12 lines (model, tokens, latency, measured vs static,
experts per token, the most and least loaded expert, peak memory, the verdict and each reconcile row that is
not equal). The detail tables follow only when asked for (:func:`runprof.renderers.run_report.render_track`).
"""
from __future__ import annotations

from ..results import Cause, LedgerRow, MemoryLedger, TrackResult
from .causes import QUANTITIES, describe
from .format import human_bytes, n, rate, seconds, wrap

SUMMARY_MAX_LINES = 12
EQUAL_CAUSES = (Cause.EQUAL, Cause.DENSE, Cause.ALL_EXPERTS_USED)
"""Reconcile causes that mean "as the static count says": the summary gives them no line of their own."""


def render_summary(r: TrackResult, width: int | None = None) -> str:
    """The summary of a run, each line wrapped to ``width`` (continuations indented)."""
    lines = [_model(r), _tokens(r), _latency(r), _active(r), *_moe(r), _memory(r.memory), *_verdict(r)]
    if "generated_first_line" in r.extra:
        lines.append(f"generated (first line): {r.extra['generated_first_line']!r}")
    lines = [line for line in lines if line]  # at most 8 + 3 reconcile rows + the generated line
    notes = [f"note: {note}" for note in r.extra.get("notes", ())]
    out = [piece for line in lines for piece in wrap(line, width)]
    if notes:
        out += ["", *(piece for line in notes for piece in wrap(line, width))]
    return "\n".join(out)


def _model(r: TrackResult) -> str:
    m = r.model
    where = m.device + (f" ({r.env.device_name})" if r.env is not None and r.env.device_name not in ("", m.device)
                        else "")
    return f"{m.name}  ({m.class_name}, {m.dtype}) on {where}"


def _tokens(r: TrackResult) -> str:
    rt, c = r.runtime, r.runtime.counts
    rows = {p: v for p, v in (c.rows if c is not None else rt.tokens).items() if v}
    computed = f"rows computed {n(sum(rows.values()))} (" + ", ".join(f"{p} {n(v)}" for p, v in rows.items()) + ")" \
        if rows else "no rows computed"
    if c is None or c.prompt is None:
        why = describe(c.cause) if c is not None and c.cause is not None else "no generate() call was seen"
        return f"tokens: {computed}; prompt and generated tokens not known ({why})"
    extra = "".join(f", {what} {n(v)}" for what, v in (("padding", c.padding_rows), ("after EOS", c.finished_rows))
                    if v)
    return f"tokens: prompt {n(c.prompt)}, generated {n(c.generated)}; {computed}{extra}"


def _latency(r: TrackResult) -> str:
    lat = r.runtime.latency
    if lat is None:
        return "latency: not kept (a result merged across ranks or runs; each rank's own result has it)"
    parts = []
    if lat.ttft_s.count:
        parts.append(f"first token {seconds(lat.ttft_s.median)}")
    if lat.decode_tokens_per_s is not None:
        d = lat.decode_step_s  # tokens/s is over the whole decode (real tokens / total step time): the mean beside it
        parts.append(f"decode {rate(lat.decode_tokens_per_s)} tokens/s (step mean {seconds(d.total / d.count)}, "
                     f"median {seconds(d.median)})" if d.count else f"decode {rate(lat.decode_tokens_per_s)} tokens/s")
    if lat.prefill_tokens_per_s is not None:
        parts.append(f"prefill {rate(lat.prefill_tokens_per_s)} tokens/s")
    if lat.train_forward_s.count:
        parts.append(f"training forward {seconds(lat.train_forward_s.median)} median")
    return "latency: " + ("; ".join(parts) if parts else "no forward call was timed")


def _active(r: TrackResult) -> str:
    s, static = r.runtime.active_params_per_token["all"], r.params.active_per_token["all"]
    head = "active params per token (convention all)"
    if s.mean is None:
        row = next((x for x in r.reconcile if x.quantity == "active_params_per_token"), None)
        return f"{head}: static {n(static)}, measured: none ({describe(row.cause, row.detail) if row else 'no tokens'})"
    if s.min == s.max == static:
        return f"{head}: measured {n(s.min)} = static {n(static)}"
    measured = n(s.min) if s.min == s.max else f"mean {n(s.mean)} [{n(s.min)}-{n(s.max)}]"
    delta = s.mean - static
    return f"{head}: measured {measured}, static {n(static)} ({'+' if delta >= 0 else ''}{n(delta)})"


def _moe(r: TrackResult) -> list[str]:
    if r.moe is None:
        return []
    rt = r.runtime
    e, k = rt.experts_per_token, rt.top_k
    value = "-" if e.mean is None else n(e.min) if e.min == e.max else f"mean {n(e.mean)} [{n(e.min)}-{n(e.max)}]"
    lines = [f"experts per token per MoE layer: {value} (k: config {n(k['config'])}, router {n(k['router'])}, "
             f"measured {n(k['measured'])})"]
    return lines + [_load(r)]


def _load(r: TrackResult) -> str:
    loads = r.runtime.expert_load
    if not loads or not any(sum(x) for x in loads):
        return "expert load: no routing captured"
    names = _layer_labels(r)
    cells = [(x / sum(load), names[i], e) for i, load in enumerate(loads) if sum(load) for e, x in enumerate(load)]
    hi, lo = max(cells, key=lambda c: c[0]), min(cells, key=lambda c: c[0])
    e = len(loads[0])
    return (f"expert load: most {100 * hi[0]:.1f}% ({hi[1]} e{hi[2]}), least {100 * lo[0]:.1f}% ({lo[1]} e{lo[2]}); "
            f"uniform {100 / e:.1f}%")


def _layer_labels(r: TrackResult) -> list[str]:
    """``layer 3`` where the static layout knows the decoder index, else the module name."""
    by_name = {x.name: x.layer_index for x in (r.moe.layers if r.moe is not None else ())}
    return [f"layer {by_name[name]}" if by_name.get(name) is not None else name for name in r.runtime.moe_layer_names]


def _bytes(ledger: MemoryLedger, name: str) -> int | None:
    return ledger.row(name).bytes if ledger.has(name) else None


def _memory(ledger: MemoryLedger | None) -> str:
    if ledger is None:
        return "memory: not measured (track(memory=False), --no-memory)"
    static = [f"{label} {human_bytes(b)}" for label, b in (("weights", _bytes(ledger, "weights")),
                                                           ("KV", _bytes(ledger, "kv_cache"))) if b is not None]
    cpu = [r for r in ledger.rows if r.bytes is None and r.reason is Cause.NOT_CUDA]
    if cpu:
        peak = _bytes(ledger, "process_rss_peak")
        rss = [f"peak RSS {human_bytes(peak)}"] if peak is not None else []
        return f"memory: {', '.join(static + rss)} (CPU: no GPU rows)"
    return "memory: " + "; ".join(x for x in (", ".join(static), _gpu_peak(ledger)) if x)


def _gpu_peak(ledger: MemoryLedger) -> str:
    allocated, activations = _bytes(ledger, "torch_allocated"), _bytes(ledger, "activations_peak")
    parts = []
    if allocated is not None and activations is not None:
        parts.append(f"peak allocated {human_bytes(allocated + activations)} ({human_bytes(activations)} above the "
                     "start)")
    used, peak, total = (_bytes(ledger, x) for x in ("nvml_used", "nvml_peak", "nvml_device_total"))
    if used is not None:
        parts.append(f"NVML: this process {human_bytes(used)}" + (f", peak {human_bytes(peak)}" if peak else "")
                     + (f" of {human_bytes(total)}" if total else ""))
    else:
        row = _first_null(ledger, "nvml_used")
        if row is not None:
            parts.append(f"NVML: {describe(row.reason, row.detail)}")
    return "; ".join(parts)


def _first_null(ledger: MemoryLedger, name: str) -> LedgerRow | None:
    return ledger.row(name) if ledger.has(name) and ledger.row(name).reason is not None else None


def _verdict(r: TrackResult) -> list[str]:
    rows = list(r.reconcile)
    if not rows:
        return ["verdict: nothing to reconcile"]
    active = rows[0]
    if active.cause is Cause.EQUAL:
        lines = [f"verdict: measured = static; each token used exactly k = {n(r.runtime.top_k['router'])} experts "
                 "per MoE layer"]
    elif active.cause in EQUAL_CAUSES:
        lines = [f"verdict: measured = static: {describe(active.cause, active.detail)}"]
    else:
        lines = [f"verdict: {describe(active.cause, active.detail)}"]
    if "weights_changed" in r.extra:
        lines[0] += "; weights " + ("CHANGED during the run" if r.extra["weights_changed"] else "unchanged (verified)")
    said = {active.cause}
    for row in rows[1:]:
        if row.cause in EQUAL_CAUSES or row.cause in said:
            continue
        said.add(row.cause)
        delta = "" if row.delta is None else f" ({'+' if row.delta >= 0 else ''}{n(row.delta)})"
        if row.quantity == "params_touched":
            lines.append(f"params touched: {n(row.measured)} of {n(row.static)}: {describe(row.cause, row.detail)}")
            continue
        lines.append(f"{QUANTITIES.get(row.quantity, row.quantity)}: static {n(row.static)}, measured "
                     f"{n(row.measured)}{delta}: {describe(row.cause, row.detail)}")
    return lines


__all__ = ["EQUAL_CAUSES", "SUMMARY_MAX_LINES", "render_summary"]
