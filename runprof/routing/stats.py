"""Routing statistics over a :class:`~runprof.tracking.trace.RoutingTrace`, per MoE layer.

Everything is computed on the CPU after the tracked region, from the expert ids (and weights) the routers
actually produced; padding (masked tokens) is excluded everywhere. Definitions:

- load: assignments per expert (a token routed to k experts counts k times); share = load / Σ load,
  uniform = 1/E; max/mean load; coefficient of variation (population std / mean); normalized entropy
  H(share)/ln E (1 = perfectly even, 0 = one expert).
- load-balancing loss from load: transformers' ``load_balancing_loss_func`` value E·Σ_e f_e·P_e with the
  router probability P_e replaced by f_e/k (f_e = fraction of tokens routed to e): (E/k)·Σ_e f_e². It is k
  at perfect balance and E when routing collapses onto k experts. The exact value, which needs the
  router's full probabilities, is :func:`runprof.routing.router.router_distribution` (bench computes it on
  the prompt forward).
- repeat rates of consecutive tokens of one sequence (one batch row: its prefill positions, then its
  decode steps): first choice (highest-weight expert equal; random 1/E), any overlap (top-k sets share an
  expert; random 1 − C(E−k,k)/C(E,k)), Jaccard |A∩B|/|A∪B| (random Σ_j P(j)·j/(2k−j), hypergeometric P).
- co-activation P(b | a) = N(a and b chosen for one token) / N(a) (random: (k−1)/(E−1) off the diagonal).
- distinct experts per decode step (union over the step's tokens) vs E·(1 − (1 − k/E)^B).
- router confidence: mean top-1 weight and the normalized entropy of the k weights (divided by ln k), from
  the weights the router passed to the experts (Mixtral renormalizes them over the top-k).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..tracking.trace import LayerTrace, RoutingTrace, StepTrace, usage
from .baselines import expected_distinct, random_any_overlap, random_coactivation, random_first_choice, random_jaccard


@dataclass(frozen=True)
class LayerRouting:
    """Routing statistics of one MoE layer (fractions in 0..1; ``None`` = not measurable, see ``notes``)."""

    name: str
    num_experts: int
    top_k: int
    tokens: int
    load: tuple[int, ...]
    load_share: tuple[float, ...]
    uniform_share: float
    max_over_mean_load: float | None
    load_cv: float | None
    load_entropy_normalized: float | None
    load_balancing_loss_from_load: float | None
    pairs: int
    first_choice_repeat: float | None
    first_choice_random: float
    any_overlap_repeat: float | None
    any_overlap_random: float
    jaccard_repeat: float | None
    jaccard_random: float
    coactivation: tuple[tuple[float | None, ...], ...]  # [a][b] = P(b | a); None where a never ran
    coactivation_random: float
    decode_steps: int
    decode_distinct_mean: float | None
    decode_distinct_min: int | None
    decode_distinct_max: int | None
    decode_tokens_per_step_mean: float | None
    decode_distinct_uniform: float | None
    top1_weight_mean: float | None
    weights_entropy_normalized: float | None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("load", "load_share", "notes"):
            d[key] = list(d[key])
        d["coactivation"] = [list(row) for row in self.coactivation]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerRouting:
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        for key in ("load", "load_share", "notes"):
            kw[key] = tuple(kw.get(key, ()))
        kw["coactivation"] = tuple(tuple(row) for row in d["coactivation"])
        return cls(**kw)


@dataclass(frozen=True)
class RoutingStats:
    """Per-layer routing statistics of one tracked run; ``to_dict`` is a list of records, one per MoE layer in
    order, each with its ``name``."""

    layers: tuple[LayerRouting, ...]

    def to_dict(self) -> list[dict[str, Any]]:
        return [layer.to_dict() for layer in self.layers]

    @classmethod
    def from_dict(cls, d: list[dict[str, Any]] | dict[str, Any]) -> RoutingStats:
        """From the list ``to_dict`` writes (or the dict keyed by layer name that runprof wrote before)."""
        items = list(d.values()) if isinstance(d, dict) else list(d)
        return cls(tuple(LayerRouting.from_dict(v) for v in items))


def routing_stats(trace: RoutingTrace) -> RoutingStats:
    """Statistics of every MoE layer of a tracked run (``t.trace`` after ``with runprof.track(model)``).

    >>> import torch, runprof
    >>> from transformers import MixtralConfig, AutoModelForCausalLM
    >>> cfg = MixtralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                     num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    >>> model = AutoModelForCausalLM.from_config(cfg).eval()
    >>> with runprof.track(model, trace=True) as t:
    ...     _ = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False)
    >>> s = routing_stats(t.trace)
    >>> s.layers[0].tokens, s.layers[0].pairs, sum(s.layers[0].load)  # 3 + 3 tokens, 5 pairs, 6 x k=2
    (6, 5, 12)
    """
    return RoutingStats(tuple(layer_stats(c, trace.steps, name) for name, c in zip(trace.layer_names, trace.layers)))


def layer_stats(calls: LayerTrace, steps: tuple[StepTrace, ...], name: str = "") -> LayerRouting:
    """Statistics of one layer's captured calls (see the module docstring for the definitions)."""
    e, k = calls.num_experts, max(int(calls.ids.shape[1]), 1)
    k_base = min(k, e)
    used = usage(calls) & calls.real[:, None]
    notes: list[str] = []
    load = _load(calls, used, k, notes)
    repeat = _repeats(calls, used, steps, notes)
    decode = _decode_distinct(calls, used, steps, k_base, notes)
    return LayerRouting(
        name=name, num_experts=e, top_k=k, tokens=int(calls.real.sum()), **load,
        first_choice_random=random_first_choice(e), any_overlap_random=random_any_overlap(e, k_base),
        jaccard_random=random_jaccard(e, k_base), **repeat,
        coactivation=_coactivation(used), coactivation_random=random_coactivation(e, k_base), **decode,
        **_confidence(calls, notes), notes=tuple(notes),
    )


def _load(calls: LayerTrace, used: torch.Tensor, k: int, notes: list[str]) -> dict[str, Any]:
    e = calls.num_experts
    valid = (calls.ids >= 0) & calls.real[:, None]
    load = torch.bincount(calls.ids[valid], minlength=e)[:e].double()
    total, tokens = float(load.sum()), int(calls.real.sum())
    out: dict[str, Any] = {"load": tuple(int(x) for x in load), "uniform_share": 1.0 / e}
    if total == 0:
        notes.append("no routed tokens: load statistics are undefined")
        return out | {"load_share": (0.0,) * e, "max_over_mean_load": None, "load_cv": None,
                      "load_entropy_normalized": None, "load_balancing_loss_from_load": None}
    share = load / total
    mean = total / e
    nz = share[share > 0]
    entropy = float(-(nz * nz.log()).sum()) / math.log(e) if e > 1 else None
    f = load / tokens  # fraction of tokens routed to each expert (sums to k)
    return out | {
        "load_share": tuple(float(x) for x in share),
        "max_over_mean_load": float(load.max()) / mean,
        "load_cv": float(load.std(unbiased=False)) / mean,
        "load_entropy_normalized": entropy,
        "load_balancing_loss_from_load": e * float((f * f).sum()) / k,
    }


def sequence_order(calls: LayerTrace, steps: tuple[StepTrace, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of real tokens in time order within each sequence, and each row's sequence id.

    A sequence is one batch row of one generation: a prefill step starts a generation, its decode steps
    continue it. Row ``r`` of step ``s`` is batch row ``position // seq`` at time ``position % seq``.
    """
    rows = torch.nonzero(calls.real).flatten()
    if rows.numel() == 0:
        return rows, rows
    st, pos = calls.step[rows], calls.position[rows]
    n_steps = max(len(steps), int(st.max()) + 1)
    phases = [s.phase for s in steps] + ["prefill"] * (n_steps - len(steps))
    seq_len = torch.tensor([s.seq for s in steps] + [0] * (n_steps - len(steps)), dtype=torch.long)
    seq_len[seq_len <= 0] = int(calls.position.max()) + 1  # implicit step (no shape): one row
    gen = torch.cumsum(torch.tensor([p == "prefill" for p in phases], dtype=torch.long), 0).clamp(min=1) - 1
    b, t = pos // seq_len[st], pos % seq_len[st]
    seq = gen[st] * (int(b.max()) + 1) + b
    span = int(t.max()) + 1
    key = (seq * n_steps + st) * span + t
    order = torch.argsort(key, stable=True)
    return rows[order], seq[order]


def first_choice(calls: LayerTrace) -> torch.Tensor:
    """Each row's highest-weight expert (the first id when the router passed no weights; -1 for none)."""
    if calls.weights is None or calls.ids.shape[1] == 0:
        return calls.ids[:, 0] if calls.ids.shape[1] else torch.full((calls.ids.shape[0],), -1)
    w = calls.weights.masked_fill(calls.ids < 0, float("-inf"))
    return calls.ids.gather(1, w.argmax(1, keepdim=True)).squeeze(1)


def _repeats(calls: LayerTrace, used: torch.Tensor, steps: tuple[StepTrace, ...], notes: list[str]) -> dict[str, Any]:
    rows, seq = sequence_order(calls, steps)
    same = seq[1:] == seq[:-1]
    a, b = rows[:-1][same], rows[1:][same]
    pairs = int(a.numel())
    if pairs == 0:
        notes.append("no consecutive token pairs: repeat rates are undefined")
        return {"pairs": 0, "first_choice_repeat": None, "any_overlap_repeat": None, "jaccard_repeat": None}
    first = first_choice(calls)
    fa, fb = first[a], first[b]
    both = (fa >= 0) & (fb >= 0)
    inter = (used[a] & used[b]).sum(1)
    union = (used[a] | used[b]).sum(1)
    return {
        "pairs": pairs,
        "first_choice_repeat": float((fa == fb)[both].double().mean()) if bool(both.any()) else None,
        "any_overlap_repeat": float((inter > 0).double().mean()),
        # integer ratios divided in float64 (int / int gives float32)
        "jaccard_repeat": float((inter[union > 0].double() / union[union > 0].double()).mean())
        if bool((union > 0).any())
        else None,
    }


def _coactivation(used: torch.Tensor) -> tuple[tuple[float | None, ...], ...]:
    u = used.double()
    both = u.T @ u  # [a, b] = tokens that chose a and b
    n = torch.diagonal(both)
    return tuple(
        tuple(float(both[a, b] / n[a]) if n[a] > 0 else None for b in range(both.shape[1]))
        for a in range(both.shape[0])
    )


def _decode_distinct(calls: LayerTrace, used: torch.Tensor, steps: tuple[StepTrace, ...], k: int,
                     notes: list[str]) -> dict[str, Any]:
    decode = [i for i, s in enumerate(steps) if s.phase == "decode"]
    none = {"decode_steps": 0, "decode_distinct_mean": None, "decode_distinct_min": None,
            "decode_distinct_max": None, "decode_tokens_per_step_mean": None, "decode_distinct_uniform": None}
    if not decode or calls.step.numel() == 0:
        notes.append("no decode steps: distinct experts per decode step are undefined")
        return none
    n_steps = max(len(steps), int(calls.step.max()) + 1)
    per_step = torch.zeros(n_steps, calls.num_experts, dtype=torch.long).index_add_(0, calls.step, used.long())
    tokens = torch.bincount(calls.step[calls.real], minlength=n_steps)
    idx = torch.tensor([i for i in decode if tokens[i] > 0], dtype=torch.long)
    if idx.numel() == 0:
        notes.append("no real tokens in the decode steps")
        return none
    distinct = (per_step[idx] > 0).sum(1)
    expected = [expected_distinct(calls.num_experts, k, int(tokens[i])) for i in idx]
    return {
        "decode_steps": int(idx.numel()),
        "decode_distinct_mean": float(distinct.double().mean()),
        "decode_distinct_min": int(distinct.min()),
        "decode_distinct_max": int(distinct.max()),
        "decode_tokens_per_step_mean": float(tokens[idx].double().mean()),
        "decode_distinct_uniform": sum(expected) / len(expected),
    }


def _confidence(calls: LayerTrace, notes: list[str]) -> dict[str, Any]:
    if calls.weights is None:
        notes.append("the router passed no weights: confidence is unknown")
        return {"top1_weight_mean": None, "weights_entropy_normalized": None}
    valid = (calls.ids >= 0)[calls.real]
    w = calls.weights[calls.real].double().masked_fill(~valid, 0.0)
    if w.shape[0] == 0:
        return {"top1_weight_mean": None, "weights_entropy_normalized": None}
    top1 = float(w.max(1).values.mean())
    k = w.shape[1]
    if k < 2:
        notes.append("one expert per token: the weights have no spread (entropy undefined)")
        return {"top1_weight_mean": top1, "weights_entropy_normalized": None}
    p = w.clamp(min=0) / w.clamp(min=0).sum(1, keepdim=True).clamp(min=1e-30)
    h = -(p * p.clamp(min=1e-30).log()).sum(1) / math.log(k)
    return {"top1_weight_mean": top1, "weights_entropy_normalized": float(h.mean())}


__all__ = ["LayerRouting", "RoutingStats", "first_choice", "layer_stats", "routing_stats", "sequence_order"]
