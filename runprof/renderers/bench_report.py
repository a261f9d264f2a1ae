"""Text report of ``python -m runprof bench``: one row per (top-k, batch size), then routing per layer."""
from __future__ import annotations

from ..routing.bench import BenchResult, BenchRun
from ..routing.stats import LayerRouting
from .format import n
from .format import table as _table


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _spread(s: object) -> str:
    med, lo, hi = s.median, s.min, s.max  # type: ignore[attr-defined]
    return "-" if med is None else f"{med:,.0f} ({lo:,.0f}-{hi:,.0f})"


def render_bench(r: BenchResult) -> str:
    """Summary table side by side, distinct experts per decode step, then a routing table per top-k (first
    batch size). Example: ``print(render_bench(runprof.routing.bench(model, ids, top_ks=[1, 2])))``."""
    m = r.model
    out = [f"{m.name}  ({m.class_name}, {m.dtype}, {m.device}); {r.num_experts} experts per layer, own top-k "
           f"{n(r.top_k_original)} ({'restored' if r.top_k_restored else 'NOT RESTORED'}); prompt {r.prompt_tokens} "
           f"tokens, {r.max_new_tokens} new, {r.warmup} warm-up + {r.repeats} timed runs per cell, "
           f"{r.cpu_threads} CPU threads"]
    rows = [_summary_row(run, r.reference.mean_logprob) for run in r.runs]
    out += ["", _table(rows, ["k", "batch", "experts/token", "active params/token", "static", "prefill tok/s",
                              "decode tok/s", "mean logprob", f"vs k={r.top_k_original}"],
                       ("right",) * 3 + ("right",) * 6)]
    out.append(f"timing: {r.timing_method}")
    out += ["", render_decode_distinct(r)]
    shown = set()
    for run in r.runs:
        if run.top_k in shown:
            continue
        shown.add(run.top_k)
        out += ["", f"routing at k={run.top_k}, batch {run.batch_size} (repeat rates in %, random baseline in "
                    f"brackets; LBL: k balanced, E collapsed)", render_routing(run)]
    out += [f"note: {note}" for note in r.notes]
    return "\n".join(out)


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
