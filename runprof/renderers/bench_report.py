"""Text report of ``python -m runprof bench``: one row per (top-k, batch size), then routing per layer."""
from __future__ import annotations

from ..routing.bench import BenchResult, BenchRun
from ..routing.stats import LayerRouting
from .format import n, rate, terminal_width, wrap
from .format import table as _table


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _spread(s: object) -> str:
    med, lo, hi = s.median, s.min, s.max  # type: ignore[attr-defined]
    return "-" if med is None else f"{med:,.0f} ({lo:,.0f}-{hi:,.0f})"


def render_bench(r: BenchResult, *, full: bool = False, width: int | None = None) -> str:
    """The bench summary (one row per top-k and batch size, a verdict, a routing line per top-k), fitted to
    ``width`` (the terminal's when None); with ``full``, then the detail: timings with their spread, distinct
    experts per decode step, a routing table per top-k. Example:
    ``print(render_bench(runprof.routing.bench(model, ids, top_ks=[1, 2])))``."""
    width = terminal_width() if width is None else width
    out = [render_bench_summary(r, width)]
    if full:
        out.append(render_bench_detail(r, width))
    return "\n\n".join(out)


def render_bench_summary(r: BenchResult, width: int | None = None) -> str:
    m = r.model
    where = m.device + (f" ({r.env.device_name})" if r.env is not None and r.env.device_name != m.device else "")
    out = wrap(f"{m.name}  ({m.class_name}, {m.dtype}) on {where}: {r.num_experts} experts per layer, own top-k "
               f"{n(r.top_k_original)} ({'restored' if r.top_k_restored else 'NOT RESTORED'}); prompt "
               f"{r.prompt_tokens} tokens, {r.max_new_tokens} new; {r.warmup} warm-up + {r.repeats} timed runs per "
               f"cell; {r.cpu_threads} CPU thread{'' if r.cpu_threads == 1 else 's'}", width)
    rows = [_brief_row(run, r.reference.mean_logprob) for run in r.runs]
    out += ["", _table(rows, ["k", "batch", "experts\n/token", "active/token\n(vs static)",
                              "decode\ntok/s", "prefill\ntok/s", f"mean logprob\n(vs k={n(r.top_k_original)})"],
                       ("right",) * 7, width=width)]
    out += wrap(_bench_verdict(r), width)
    first = {}
    for run in r.runs:  # one routing line per k: its first batch size
        first.setdefault(run.top_k, run)
    out += [piece for run in first.values() for piece in wrap(_routing_line(run), width)]
    out += [piece for note in r.notes for piece in wrap(f"note: {note}", width)]
    return "\n".join(out)


def render_bench_detail(r: BenchResult, width: int | None = None) -> str:
    """Every cell with its timing spread, distinct experts per decode step, a routing table per top-k."""
    rows = [_summary_row(run, r.reference.mean_logprob) for run in r.runs]
    out = [_table(rows, ["k", "batch", "experts/token", "active params/token", "static", "prefill tok/s",
                         "decode tok/s", "mean logprob", f"vs k={r.top_k_original}"], ("right",) * 9)]
    out += wrap(f"timing: {r.timing_method}", width)
    out += ["", render_decode_distinct(r)]
    shown = set()
    for run in r.runs:
        if run.top_k in shown:
            continue
        shown.add(run.top_k)
        out += ["", *wrap(f"routing at k={run.top_k}, batch {run.batch_size} (repeat rates in %, random baseline in "
                          f"brackets; LBL: k balanced, E collapsed)", width), render_routing(run)]
    return "\n".join(out)


def _brief_row(run: BenchRun, ref: float) -> list[str]:
    e, a = run.experts_per_token, run.active_params_per_token
    experts = "-" if e.mean is None else (f"{e.min}" if e.min == e.max else f"{e.mean:.2f} [{e.min}-{e.max}]")
    static = run.static_active_params_per_token
    if a.mean is None:
        active = "-"
    elif a.min == a.max:
        active = f"{n(a.min)} ({'=' if a.min == static else f'{a.min - static:+,}'})"
    else:
        active = f"{a.mean:,.1f} ({a.mean - static:+,.1f})"
    delta = run.score.mean_logprob - ref
    return [str(run.top_k), str(run.batch_size), experts, active, rate(run.decode_tokens_per_s.median),
            rate(run.prefill_tokens_per_s.median), f"{run.score.mean_logprob:.3f} ({delta:+.3f})"]


def _bench_verdict(r: BenchResult) -> str:
    off = []
    for run in r.runs:
        e, a = run.experts_per_token, run.active_params_per_token
        if not (e.min == e.max == run.top_k and a.min == a.max == run.static_active_params_per_token):
            off.append(f"k={run.top_k} batch {run.batch_size}")
    if not off:
        return "verdict: in every cell each token used exactly k experts per MoE layer and measured active params " \
               "= static"
    return f"verdict: measured differs from k or static in {', '.join(off)} (--full: experts and active params)"


def _range(values: list[float | None], scale: float = 1.0, digits: int = 1) -> str:
    xs = [v * scale for v in values if v is not None]
    if not xs:
        return "-"
    lo, hi = min(xs), max(xs)
    return f"{lo:.{digits}f}" if lo == hi else f"{lo:.{digits}f}-{hi:.{digits}f}"


def _routing_line(run: BenchRun) -> str:
    layers = run.routing.layers
    first = _range([x.first_choice_repeat for x in layers], 100)
    rand = _range([x.first_choice_random for x in layers], 100)
    load = _range([x.max_over_mean_load for x in layers], digits=2)
    distinct = _range([x.decode_distinct_mean for x in layers], digits=2)
    uniform = _range([x.decode_distinct_uniform for x in layers], digits=2)
    return (f"k={run.top_k} batch {run.batch_size}, over {len(layers)} layers: first-choice repeat {first}% "
            f"(random {rand}%), load max/mean {load}, distinct experts per decode step {distinct} (uniform {uniform})")


def _summary_row(run: BenchRun, ref: float) -> list[str]:
    e, a = run.experts_per_token, run.active_params_per_token
    experts = "-" if e.mean is None else (f"{e.min}" if e.min == e.max else f"{e.mean:.2f} [{e.min}-{e.max}]")
    active = "-" if a.mean is None else (n(a.min) if a.min == a.max else f"{a.mean:,.1f} [{n(a.min)}-{n(a.max)}]")
    flag = "" if a.min == a.max == run.static_active_params_per_token else " !"
    delta = run.score.mean_logprob - ref
    return [str(run.top_k), str(run.batch_size), experts, active + flag, n(run.static_active_params_per_token),
            _spread(run.prefill_tokens_per_s), _spread(run.decode_tokens_per_s), f"{run.score.mean_logprob:.3f}",
            f"{delta:+.3f}"]


def render_decode_distinct(r: BenchResult) -> str:
    """Distinct experts per decode step and layer (the step's weight traffic) vs uniform routing."""
    names = [layer.name for layer in r.runs[0].routing.layers]
    rows = [[str(run.top_k), str(run.batch_size)] + [
        "-" if s.decode_distinct_mean is None else f"{s.decode_distinct_mean:.2f} ({s.decode_distinct_uniform:.2f})"
        for s in run.routing.layers] for run in r.runs]
    return _table(rows, ["k", "batch", *names], ("right",) * (2 + len(names))) + \
        "\ndistinct experts per decode step, mean (uniform routing: E(1 - (1 - k/E)^B)); batch rows are rotations " \
        "of the prompt"


def render_routing(run: BenchRun) -> str:
    """Per-layer routing statistics of one run."""
    routers = run.score.router or (None,) * len(run.routing.layers)
    rows = [_layer_row(layer, router) for layer, router in zip(run.routing.layers, routers)]
    headers = ["layer", "first", "any", "jaccard", "load % min-max", "max/mean", "CV", "entropy", "LBL load",
               "LBL router", "top-1 w", "distinct/decode step"]
    return _table(rows, headers, ("left",) + ("right",) * (len(headers) - 1))


def _layer_row(s: LayerRouting, router: object) -> list[str]:
    shares = list(s.load_share)
    lbl_router = getattr(router, "load_balancing_loss", None)
    distinct = "-" if s.decode_distinct_mean is None else (
        f"{s.decode_distinct_mean:.2f} ({s.decode_distinct_uniform:.2f})")
    return [
        s.name,
        f"{_pct(s.first_choice_repeat)} ({_pct(s.first_choice_random)})",
        f"{_pct(s.any_overlap_repeat)} ({_pct(s.any_overlap_random)})",
        f"{_pct(s.jaccard_repeat)} ({_pct(s.jaccard_random)})",
        f"{_pct(min(shares))}-{_pct(max(shares))} ({_pct(s.uniform_share)})" if shares else "-",
        _f(s.max_over_mean_load), _f(s.load_cv), _f(s.load_entropy_normalized, 3),
        _f(s.load_balancing_loss_from_load, 3), _f(lbl_router, 3), _f(s.top1_weight_mean, 3), distinct,
    ]


__all__ = ["render_bench", "render_decode_distinct", "render_routing"]
