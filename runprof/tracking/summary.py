"""Turning a :class:`~runprof.tracking.trace.RoutingTrace` into a :class:`RuntimeInfo` (after the hooks are off).

Definitions (``docs/architecture.md``):
- per token: base + Σ_layers (distinct experts this token used in the layer) x params per expert, where
  base = total − Σ_layers E x params per expert (everything but routed experts);
- per step: base + Σ_layers (experts any real token of the step used) x params per expert;
- per run (``params_touched``): the same over the union of the whole run.

A token is a slot ``(step, position)``; each layer's rows map onto the slots by ``offset[step] + position``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..results import CONVENTIONS, PHASES, CountResult, RuntimeInfo, Stat, StepRecord, convention_offset, touched_params
from .trace import LayerTrace, RoutingTrace, StepTrace, usage


@dataclass
class _Slots:
    """The token slots of a run: rows per step (the most any layer routed), their offsets, step of each slot."""

    size: torch.Tensor  # [steps]
    offset: torch.Tensor  # [steps]
    step: torch.Tensor  # [slots]

    @classmethod
    def of(cls, trace: RoutingTrace) -> _Slots:
        n_steps = max([len(trace.steps)] + [int(c.step.max()) + 1 for c in trace.layers if c.step.numel()])
        size = torch.zeros(n_steps, dtype=torch.long)
        for c in trace.layers:
            if c.step.numel():
                size = torch.maximum(size, torch.bincount(c.step, minlength=n_steps))
        return cls(size, torch.cumsum(size, 0) - size, torch.repeat_interleave(torch.arange(n_steps), size))

    @property
    def n_steps(self) -> int:
        return int(self.size.numel())


@dataclass
class _Layers:
    """What every layer contributed: per-slot Σ of distinct experts x params per expert, which slots a layer
    saw, distinct experts per real row, expert loads, experts touched per step and over the run."""

    acc: torch.Tensor
    seen: torch.Tensor
    distinct: list[torch.Tensor]
    loads: list[tuple[int, ...]]
    touched_steps: torch.Tensor  # [steps, layers]
    measured_k: int | None


def _real_tokens(steps: tuple[StepTrace, ...], slots: _Slots) -> list[int]:
    """Real tokens of each step; an implicit step (a submodule called directly) counts its routed rows."""
    return [int(st.mask.sum()) if st.mask is not None else (st.batch * st.seq or int(slots.size[i]))
            for i, st in enumerate(steps)]


def _layers(trace: RoutingTrace, slots: _Slots) -> _Layers:
    total = int(slots.size.sum())
    out = _Layers(torch.zeros(total, dtype=torch.long), torch.zeros(total, dtype=torch.bool), [], [],
                  torch.zeros(slots.n_steps, len(trace.layers), dtype=torch.long), None)
    for li, c in enumerate(trace.layers):
        used = usage(c) & c.real[:, None]
        distinct = used.sum(1)
        out.distinct.append(distinct[c.real])
        if c.ids.numel():
            out.measured_k = max(out.measured_k or 0, c.top_k)
        out.loads.append(_load(c))
        key = (slots.offset[c.step] + c.position)[c.real]
        out.acc.index_add_(0, key, distinct[c.real] * c.params_per_expert)
        out.seen[key] = True
        per_step = torch.zeros(slots.n_steps, c.num_experts, dtype=torch.long).index_add_(0, c.step, used.long())
        out.touched_steps[:, li] = (per_step > 0).sum(1)
    return out


def _load(c: LayerTrace) -> tuple[int, ...]:
    valid = (c.ids >= 0) & c.real[:, None]
    return tuple(int(x) for x in torch.bincount(c.ids[valid], minlength=c.num_experts)[: c.num_experts])


def _moe_stats(static: CountResult, trace: RoutingTrace, slots: _Slots,
               layers: _Layers) -> tuple[dict[str, Stat], dict[str, Stat], list[float | None]]:
    """Per-token statistics by convention and by phase, and each step's mean, from the measured slots."""
    base = static.params.total - sum(c.num_experts * c.params_per_expert for c in trace.layers)
    values = base + layers.acc[layers.seen]
    value_step = slots.step[layers.seen]
    phase_of_step = torch.tensor([PHASES.index(st.phase) for st in trace.steps]
                                 + [0] * (slots.n_steps - len(trace.steps)), dtype=torch.long)
    value_phase = phase_of_step[value_step] if value_step.numel() else value_step
    everything = Stat.of(values)
    p = static.params
    by_conv = {c: everything.shifted(convention_offset(c, p.by_group, p.lm_head_tied)) for c in CONVENTIONS}
    by_phase = {ph: Stat.of(values[value_phase == i]) for i, ph in enumerate(PHASES)}
    sums = torch.zeros(slots.n_steps, dtype=torch.long).index_add_(0, value_step, values)
    counts = torch.bincount(value_step, minlength=slots.n_steps)
    step_mean = [int(sums[i]) / int(counts[i]) if counts[i] else None for i in range(slots.n_steps)]
    return by_conv, by_phase, step_mean


def _dense_stats(static: CountResult, real: list[int],
                 tokens: dict[str, int]) -> tuple[dict[str, Stat], dict[str, Stat], list[float | None]]:
    """A dense model: every real token uses every parameter."""
    p = static.params
    by_conv = {c: Stat.constant(p.total - convention_offset(c, p.by_group, p.lm_head_tied), sum(real))
               for c in CONVENTIONS}
    by_phase = {ph: Stat.constant(p.total, tokens[ph]) for ph in PHASES}
    return by_conv, by_phase, [float(p.total) if n else None for n in real]


def summarize(static: CountResult, trace: RoutingTrace, *, unused_modules: tuple[str, ...],
              wall_s: float) -> RuntimeInfo:
    """Measured tokens, active params, experts per token, expert load and touched params of one run."""
    slots = _Slots.of(trace)
    real = _real_tokens(trace.steps, slots)
    tokens = dict.fromkeys(PHASES, 0)
    for st, n in zip(trace.steps, real):
        tokens[st.phase] += n
    layers = _layers(trace, slots)
    if static.moe is None:
        by_conv, by_phase, step_mean = _dense_stats(static, real, tokens)
    elif trace.layers:
        by_conv, by_phase, step_mean = _moe_stats(static, trace, slots, layers)
    else:  # an MoE model tracked with routing=False: per-token figures were not measured
        by_conv, by_phase, step_mean = dict.fromkeys(CONVENTIONS, Stat()), dict.fromkeys(PHASES, Stat()), \
            [None] * len(trace.steps)
    base = static.params.total - sum(c.num_experts * c.params_per_expert for c in trace.layers)
    moe = static.moe
    steps = tuple(
        StepRecord(phase=st.phase, tokens=real[i], experts_touched=tuple(int(x) for x in layers.touched_steps[i]),
                   active_params_per_token_mean=step_mean[i],
                   params_touched=None if moe is not None and not trace.layers else base + sum(
                       int(t) * c.params_per_expert for t, c in zip(layers.touched_steps[i], trace.layers)))
        for i, st in enumerate(trace.steps))
    return RuntimeInfo(
        tokens=tokens,
        active_params_per_token=by_conv,
        active_params_per_token_by_phase=by_phase,
        experts_per_token=Stat.of(torch.cat(layers.distinct)) if layers.distinct else Stat(),
        top_k={"config": moe.top_k_config if moe else None, "router": moe.top_k if moe else None,
               "measured": layers.measured_k},
        expert_load=tuple(layers.loads),
        params_touched=touched_params(static, tuple(layers.loads)) if trace.layers or moe is None else None,
        steps=steps,
        unused_modules=unused_modules,
        moe_layer_names=trace.layer_names,
        forward_calls=len(trace.steps),
        wall_s=wall_s,
    )
