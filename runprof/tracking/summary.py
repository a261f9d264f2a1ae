"""From a finished capture to a :class:`RuntimeInfo` (after the hooks are off; one copy per device).

Definitions (``docs/architecture.md``):
- per token: base + Σ_layers (distinct experts this token used in the layer) x params per expert, where
  base = total − Σ_layers E x params per expert (everything but routed experts);
- per step: base + Σ_layers (experts any row of the step used) x params per expert;
- per run (``params_touched``): the same over the union of the whole run's real tokens.
"""
from __future__ import annotations

import functools
import gc
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch

from ..flops import ModelFlops, count_flops, utilization
from ..results import CONVENTIONS, Cause, CountResult, RuntimeInfo, Stat, StepRecord, convention_offset, touched_params
from ..results.counts import Observation, TokenCounts
from .capture import Capture
from .collectors import StepCollector
from .counters import PHASES
from .latency import latency
from .trace import LayerTrace, RoutingTrace, StepTrace


def to_cpu(tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """The tensors on the CPU: those of one device and dtype concatenated and copied once."""
    out: list[torch.Tensor | None] = [None] * len(tensors)
    groups: dict[tuple[str, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        if t is not None:
            groups.setdefault((str(t.device), t.dtype), []).append(i)
    for idx in groups.values():
        flat = torch.cat([tensors[i].reshape(-1) for i in idx]).cpu()
        for i, part in zip(idx, flat.split([tensors[i].numel() for i in idx])):
            out[i] = part.view(tensors[i].shape)
    return out


@dataclass
class Counters:
    """A capture's counters on the CPU, layers in model order."""

    load: torch.Tensor  # [P, L, E]
    load_all: torch.Tensor
    hist: torch.Tensor  # [P, L, E + 1]
    kseen: list[int]
    missed: int
    misaligned: int
    stats: torch.Tensor  # [P, 4]
    tokens: torch.Tensor  # [P]
    generated: int
    finished: int
    steps: torch.Tensor  # [S, 3 + L]
    prompts: list[int]  # real prompt tokens per generation
    coact: torch.Tensor | None = None  # [L, E, E]
    wsum: torch.Tensor | None = None  # [L, E]


def read(cap: Capture, collector: StepCollector) -> Counters:
    """Every counter of ``cap`` (and the prompt counts of ``collector``) on the CPU."""
    per_group = [[g.load, g.load_all, g.hist, g.kseen, g.missed, g.misaligned, g.coact, g.wsum] for g in cap.groups]
    prompts = [g.prompt for g in collector.generations]
    device_prompts = [p for p in prompts if isinstance(p, torch.Tensor)]
    main = [cap.stats, cap.tokens, cap.generated, cap.finished, cap.steps, *device_prompts]
    got = to_cpu([t for g in per_group for t in g] + main)
    n_layers = len(cap.where)
    e = max([g.e for g in cap.groups], default=1)
    p = len(PHASES)
    load, load_all = torch.zeros(p, n_layers, e, dtype=torch.long), torch.zeros(p, n_layers, e, dtype=torch.long)
    hist = torch.zeros(p, n_layers, e + 1, dtype=torch.long)
    coact = torch.zeros(n_layers, e, e, dtype=torch.long) if cap.options.coactivation else None
    wsum = torch.zeros(n_layers, e, dtype=torch.float64) if cap.options.weights else None
    kseen = list(cap.checks.kmax)
    missed, misaligned = sum(cap.checks.missed), sum(cap.checks.misaligned)
    for gi, g in enumerate(cap.groups):
        gl, ga, gh, gk, gm, gmis, gc, gw = got[8 * gi: 8 * gi + 8]
        load[:, g.layers, :g.e], load_all[:, g.layers, :g.e], hist[:, g.layers, :g.e + 1] = gl, ga, gh
        if coact is not None:
            coact[g.layers, :g.e, :g.e] = gc
        if wsum is not None:
            wsum[g.layers, :g.e] = gw
        if cap.options.compiled:
            for j, layer in enumerate(g.layers):
                kseen[layer] = max(kseen[layer], int(gk[j]))
            missed, misaligned = missed + int(gm.sum()), misaligned + int(gmis.sum())
    stats, tokens, generated, finished, steps, *dev = got[8 * len(cap.groups):]
    it = iter(dev)
    prompts = [int(next(it)) if isinstance(x, torch.Tensor) else x for x in prompts]
    return Counters(load, load_all, hist, kseen, missed, misaligned, stats, tokens, int(generated), int(finished),
                    steps, prompts, coact, wsum)


def _stat(row: torch.Tensor) -> Stat:
    total, count, low, high = (int(x) for x in row)
    return Stat(total, count, low, high) if count else Stat()


def _experts_per_token(hist: torch.Tensor) -> Stat:
    per_d = hist.sum(dim=(0, 1))  # tokens x layers that used d distinct experts
    used = torch.nonzero(per_d).flatten()
    if not used.numel():
        return Stat()
    d = torch.arange(per_d.numel())
    return Stat(int((per_d * d).sum()), int(per_d.sum()), int(used.min()), int(used.max()))


def _counts(collector: StepCollector, c: Counters) -> TokenCounts:
    """Prompt and generated tokens of the ``generate()`` calls seen, and the rows behind them."""
    gens = collector.generations
    rows = dict(collector.rows)
    real = int(c.tokens.sum())
    counts = dict(rows=rows, padding_rows=sum(rows.values()) - real - c.finished, finished_rows=c.finished,
                  generations=len(gens))
    infos = [g.info for g in gens]
    if not gens or any(i is None for i in infos):
        return TokenCounts(None, None, sequences=None, cause=Cause.NOT_GENERATE, **counts)
    if len({(i.num_beams, i.num_return_sequences) for i in infos}) > 1:
        return TokenCounts(None, None, sequences=None, cause=Cause.MIXED_EXPANSION, **counts)
    info = infos[0]
    prompt = sum(p // info.expansion for p in c.prompts)
    if info.num_beams > 1:
        sequences = sum(g.rows // info.num_beams * info.num_return_sequences for g in gens)
        exact = info.min_new_tokens is not None and info.max_new_tokens is not None \
            and info.min_new_tokens >= info.max_new_tokens
        generated = sequences * info.max_new_tokens if exact else None
        return TokenCounts(prompt, generated, sequences=sequences, cause=None if exact else Cause.BEAM_LENGTHS,
                           **counts)
    # one row per returned sequence: its prefill output, then each decode step it was still live in
    tracked = sum(g.rows for g in gens if g.done is not None) + c.generated
    untracked = sum(g.rows * (g.decode_steps + 1) for g in gens if g.done is None)
    return TokenCounts(prompt, tracked + untracked, sequences=sum(g.rows for g in gens), **counts)


def _steps(static: CountResult, collector: StepCollector, c: Counters, ppe: list[int]) -> tuple[StepRecord, ...]:
    base = static.params.total - sum(layer.num_experts * layer.params_per_expert
                                     for layer in (static.moe.layers if static.moe else ()))
    steps = c.steps.cpu()
    n = min(steps.shape[1] - 3, len(ppe))  # Σ_layers touched x params per expert, for every step at once
    expert_params = (steps[:, 3:3 + n] * torch.tensor(ppe[:n], dtype=torch.long)).sum(1).tolist()
    return tuple(StepRecord(phase=meta.phase, tokens=rec[0], experts_touched=tuple(rec[3:]),
                            active_params_per_token_mean=rec[1] / rec[2] if rec[2] else None,
                            params_touched=base + p)
                 for meta, rec, p in zip(collector.meta, steps.tolist(), expert_params))


def _perf(static: CountResult, cap: Capture, collector: StepCollector, c: Counters, model: ModelFlops | None,
          measured: bool, steps: tuple[StepRecord, ...], lat: Any, peaks: tuple, unused: frozenset[str] | None
          ) -> tuple[Any, Any]:
    """The run's FLOPs and utilization (None, None without the model's FLOPs structure)."""
    if model is None:
        return None, None
    flops = count_flops(model, collector.meta, n_steps=cap.n_steps, rows=dict(collector.rows),
                        load_all=c.load_all if measured else None, kseen=c.kseen, unused=unused, runs=collector.runs)
    return flops, utilization(model, flops, collector.meta, steps, lat, device=cap.main, dtype=static.model.dtype,
                              n_steps=cap.n_steps, peaks=peaks)


T = TypeVar("T")


def _gc_paused(fn: Callable[..., T]) -> Callable[..., T]:
    """Runs ``fn`` with the cyclic garbage collector paused: building tens of thousands of small records beside a
    loaded model otherwise triggers full collections over the model's objects (10x the building time)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        was = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was:
                gc.enable()
    return wrapper


@_gc_paused
def summarize(static: CountResult, cap: Capture, collector: StepCollector, *, routing: bool,
              unused_modules: tuple[str, ...], wall_s: float, notes: tuple = (), flops: ModelFlops | None = None,
              peaks: tuple[float | None, float | None] = (None, None), ran: bool = False) -> RuntimeInfo:
    """Measured tokens, active params, experts per token, expert load and touched params of one run; with the
    model's ``flops`` structure, its FLOPs and utilization (``ran``: ``unused_modules`` was recorded)."""
    c = read(cap, collector)
    moe = static.moe
    layers = tuple(x for x in moe.layers if x.name in cap.names) if moe and routing else (moe.layers if moe else ())
    subset = moe is not None and routing and len(layers) < len(moe.layers)  # track(layers=...): some layers only
    if subset:
        notes = (*notes, (Cause.LAYER_SUBSET, {"layers": len(layers), "of": len(moe.layers)}))
    measured = routing or moe is None
    complete = c.missed == 0 and c.misaligned == 0
    p = static.params
    everything = sum((_stat(c.stats[i]) for i in range(len(PHASES))), Stat())
    ok = measured and (complete or moe is None)
    whole = ok and not subset  # per-token figures need every MoE layer
    by_conv = {conv: everything.shifted(convention_offset(conv, p.by_group, p.lm_head_tied)) if whole else Stat()
               for conv in CONVENTIONS}
    by_phase = {ph: _stat(c.stats[i]) if whole else Stat() for i, ph in enumerate(PHASES)}
    captured = layers if routing else ()  # routing=False: the counters hold no layer
    loads = tuple(tuple(int(x) for x in c.load[:, i, :layer.num_experts].sum(0)) for i, layer in enumerate(captured))
    loads_all = tuple(tuple(int(x) for x in c.load_all[:, i, :layer.num_experts].sum(0))
                      for i, layer in enumerate(captured))
    kseen = [k for k in c.kseen if k]
    observation = _observation(cap, collector, c, routing, notes)
    steps = _steps(static, collector, c, [layer.params_per_expert for layer in layers]) if whole else ()
    lat = latency(collector.meta, {ph: int(c.tokens[i]) for i, ph in enumerate(PHASES)})
    done, util = _perf(static, cap, collector, c, flops, whole, steps, lat, peaks,
                       frozenset(unused_modules) if ran else None)
    return RuntimeInfo(
        tokens={ph: int(c.tokens[i]) for i, ph in enumerate(PHASES)},
        active_params_per_token=by_conv,
        active_params_per_token_by_phase=by_phase,
        experts_per_token=_experts_per_token(c.hist) if ok and moe is not None else Stat(),
        top_k={"config": moe.top_k_config if moe else None, "router": moe.top_k if moe else None,
               "measured": max(kseen) if kseen and routing else None},
        expert_load=loads if ok else (),
        params_touched=(touched_params(static, loads) if whole else None) if moe else p.total,
        steps=steps,
        unused_modules=unused_modules,
        moe_layer_names=tuple(layer.name for layer in layers),  # the layers captured
        forward_calls=cap.n_steps,
        wall_s=wall_s,
        counts=_counts(collector, c),
        observation=observation,
        expert_load_computed=loads_all if ok else (),
        latency=lat,
        flops=done,
        utilization=util,
        **(_pairs(c, layers) if ok else {}),
    )


def _observation(cap: Capture, collector: StepCollector, c: Counters, routing: bool, notes: tuple) -> Observation:
    recomputed = sum(cap.checks.recomputed)
    if recomputed:
        notes = (*notes, (Cause.RECOMPUTED, {"calls": recomputed}))
    return Observation(
        compiled=cap.options.compiled, trace=cap.options.trace, steps=cap.n_steps, steps_kept=len(collector.meta),
        missed_layer_steps=c.missed if routing else 0, misaligned_layer_steps=c.misaligned if routing else 0,
        recomputed_calls=recomputed, notes=tuple(notes))


def _pairs(c: Counters, layers: tuple) -> dict:
    """Co-activation counts and router weight sums, per captured layer, when they were asked for."""
    return {
        "coactivation": None if c.coact is None else tuple(
            tuple(tuple(int(x) for x in row[:layer.num_experts]) for row in c.coact[i, :layer.num_experts])
            for i, layer in enumerate(layers)),
        "router_weight_sums": None if c.wsum is None else tuple(
            tuple(float(x) for x in c.wsum[i, :layer.num_experts]) for i, layer in enumerate(layers)),
    }


@_gc_paused
def build_trace(cap: Capture, collector: StepCollector) -> RoutingTrace:
    """The per-token trace of a ``trace=True`` capture, on the CPU (one copy per device)."""
    tr = cap.trace
    n = tr.used
    if tr.real is None:
        empty = torch.zeros(0, dtype=torch.long)
        parts = [None] * (3 + 2 * len(cap.groups))
    else:
        parts = to_cpu([tr.real[:n], tr.step[:n], tr.position[:n], *[t[:, :n] for t in tr.ids],
                        *[None if w is None else w[:, :n] for w in tr.weights]])
    real, step, position = parts[0], *(None if x is None else x.long() for x in parts[1:3])
    ids, weights = parts[3:3 + len(cap.groups)], parts[3 + len(cap.groups):]
    layers: list[LayerTrace | None] = [None] * len(cap.where)
    for gi, g in enumerate(cap.groups):
        for j, layer in enumerate(g.layers):
            name, e, ppe = cap.names[layer], cap.num_experts[layer], cap.ppe[layer]
            if real is None:
                layers[layer] = LayerTrace(name, e, ppe, torch.zeros(0, max(g.k, 1), dtype=torch.long), None, empty,
                                           empty, torch.zeros(0, dtype=torch.bool))
                continue
            # the widest top_k_index this layer saw (the staging buffer may be wider: k changed, or preallocated)
            k = max(cap.checks.kmax[layer], int(g.kseen[j]) if cap.options.compiled else 0) or g.k
            w = weights[gi][j][:, :k].float() if weights[gi] is not None else None
            layers[layer] = LayerTrace(name, e, ppe, ids[gi][j][:, :k].long(), w, step, position, real)
    masks = _step_masks(collector, real, step)
    return RoutingTrace(tuple(cap.names), tuple(StepTrace(m.phase, m.batch, m.seq, mask)
                                              for m, mask in zip(collector.meta, masks)), tuple(layers))


def _step_masks(collector: StepCollector, real: torch.Tensor | None, step: torch.Tensor | None) -> list:
    """Each step's real-row mask (None when every row of the step is real)."""
    if real is None:
        return [None] * len(collector.meta)
    n = len(collector.meta)
    counts = torch.bincount(step, minlength=n)
    padded = torch.zeros(counts.shape[0], dtype=torch.long).index_add_(0, step, (~real).long())
    starts = (torch.cumsum(counts, 0) - counts).tolist()
    return [real[a:a + c] if p else None for a, c, p in zip(starts[:n], counts.tolist()[:n], padded.tolist()[:n])]
