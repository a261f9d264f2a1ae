"""The HTML report of ``python -m runprof bench``: the summary table, the figures, one section per top-k and
batch size (measured experts and params, timings, routing per layer), and the notes."""
from __future__ import annotations

from ..routing.bench import BenchResult, BenchRun
from .bench_report import _layer_row, _summary_row
from .format import n
from .html_figures import figure_or_note
from .html_parts import note, page, section, table


def _run_anchor(run: BenchRun) -> str:
    return f"k{run.top_k}-b{run.batch_size}"


def _spread_cell(s: object, repeats: int) -> str:
    med, lo, hi = s.median, s.min, s.max  # type: ignore[attr-defined]
    if med is None:
        return "-"
    return f"{med:,.0f}" if repeats < 2 else f"{med:,.0f} (min {lo:,.0f}, max {hi:,.0f})"


def run_section(r: BenchResult, run: BenchRun) -> str:
    """One (top-k, batch size) cell: what was measured, how fast, and its routing per layer."""
    e, a = run.experts_per_token, run.active_params_per_token
    items = [
        ("experts per token per MoE layer", f"mean {n(e.mean)}, min {n(e.min)}, max {n(e.max)}; "
                                            f"measured k {n(run.top_k_measured)}"),
        ("active params per token", f"measured mean {n(a.mean)} (min {n(a.min)}, max {n(a.max)}); "
                                    f"static {n(run.static_active_params_per_token)}"),
        ("tokens per run", f"prefill {run.tokens.get('prefill', 0):,}, decode {run.tokens.get('decode', 0):,}"),
        (f"prefill tokens/s over {r.repeats} repeats", _spread_cell(run.prefill_tokens_per_s, r.repeats)),
        (f"decode tokens/s over {r.repeats} repeats", _spread_cell(run.decode_tokens_per_s, r.repeats)),
        ("mean log-likelihood of the prompt", f"{run.score.mean_logprob:.3f} "
                                              f"({run.score.mean_logprob - r.reference.mean_logprob:+.3f} vs "
                                              f"k={n(r.top_k_original)})"),
    ]
    routers = run.score.router or (None,) * len(run.routing.layers)
    rows = [_layer_row(layer, router) for layer, router in zip(run.routing.layers, routers)]
    headers = ["layer", "first", "any", "jaccard", "load % min-max", "max/mean", "CV", "entropy", "LBL load",
               "LBL router", "top-1 w", "distinct/decode step"]
    if run.top_k == 1:  # first choice, any overlap and Jaccard are one rate: show it once
        rows, headers = [[row[0], row[1], *row[4:]] for row in rows], ["layer", "repeat", *headers[4:]]
    caption = ("repeat rates of consecutive tokens in %, random routing in brackets (at k = 1 the three are one "
               "rate); LBL: load-balancing loss, k balanced, E collapsed; distinct experts per decode step "
               "(uniform routing in brackets)")
    from .html_parts import kv_table

    return section(_run_anchor(run), f"top-k = {run.top_k}, batch {run.batch_size}", kv_table(items),
                   table(headers, rows, caption=caption))


def render_bench_html(r: BenchResult) -> str:
    """The bench report as one self-contained page (figures inline where matplotlib is installed)."""
    from .plots import bench_figures, short_name, throughput_warning

    m = r.model
    facts = [f"{m.class_name}, {m.dtype} on {m.device}; {r.num_experts} experts per layer, own top-k "
             f"{n(r.top_k_original)} ({'restored' if r.top_k_restored else 'NOT RESTORED'}); prompt "
             f"{r.prompt_tokens} tokens, {r.max_new_tokens} new, {r.warmup} warm-up + {r.repeats} timed runs per cell, "
             f"{r.cpu_threads} CPU threads"]
    rows = [_summary_row(run, r.reference.mean_logprob) for run in r.runs]
    headers = ["k", "batch", "experts/token", "active params/token", "static", "prefill tok/s", "decode tok/s",
               "mean logprob", f"vs k={r.top_k_original}"]
    warning = throughput_warning(r)
    summary = [table(headers, rows, caption="tokens/s: median (min-max) over the timed runs; '!': measured differs "
                                            "from static"),
               note(f"timing: {r.timing_method}")] + ([note(f"warning: {warning}", "warn")] if warning else [])
    summary += [note(f"note: {text}") for text in r.notes]
    captions = {"expert_load": "share of each layer's assignments per expert, first batch size of each k",
                "repeat_rates": "consecutive-token repeat rates per layer; dashed: random routing",
                "throughput": f"median tokens/s, bars min-max over {r.repeats} repeats; active params per token"}
    figures: dict[str, object] = {}

    def figure(name: str) -> object:
        if not figures:
            figures.update(bench_figures(r))
        return figures[name]

    parts = [figure_or_note(lambda name=name: figure(name), caption) for name, caption in captions.items()]
    sections = [("summary", "Summary", section("summary", "Summary", *summary)),
                ("figures", "Figures", section("figures", "Figures", *dict.fromkeys(parts)))]
    sections += [(_run_anchor(run), f"k={run.top_k} b={run.batch_size}", run_section(r, run)) for run in r.runs]
    return page(f"runprof bench: {short_name(m.name)}", facts, sections)


__all__ = ["render_bench_html", "run_section"]
