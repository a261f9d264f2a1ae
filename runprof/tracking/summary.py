"""Turning captured traces into a :class:`RuntimeInfo` and the reconcile table (runs after the hooks are off).

All device data is moved to the CPU here, once per layer (one ``torch.cat`` and one copy).

Definitions (``docs/architecture.md``):
- per token: base + Σ_layers (distinct experts this token used in the layer) x params per expert, where
  base = total − Σ_layers E x params per expert (everything but routed experts);
- per step: base + Σ_layers (experts any real token of the step used) x params per expert;
- per run (``params_touched``): the same over the union of the whole run.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..results import CountResult, ReconcileRow, RuntimeInfo, Stat, StepRecord
from .collectors import LayerTrace, Step

PHASES = ("prefill", "decode")


@dataclass
class LayerCalls:
    """One layer's captured calls on the CPU: ids [N, k] and the step and token mask of each row."""

    num_experts: int
    params_per_expert: int
    ids: torch.Tensor  # [N, k] int64
    weights: torch.Tensor | None  # [N, k]
    step: torch.Tensor  # [N] step index of each row
    position: torch.Tensor  # [N] token position inside its step
    real: torch.Tensor  # [N] bool, False for padding


def to_cpu(trace: LayerTrace, steps: list[Step]) -> LayerCalls:
    """Concatenate one layer's calls on its device, copy once, attach step ids and padding masks."""
    layer = trace.layer
    k = max((t.shape[1] for t in trace.ids), default=0)
    if not trace.ids:
        empty = torch.zeros(0, dtype=torch.long)
        return LayerCalls(layer.num_experts, layer.params_per_expert, torch.zeros(0, k, dtype=torch.long), None,
                          empty, empty, torch.zeros(0, dtype=torch.bool))
    ids = torch.cat([_pad_k(t, k) for t in trace.ids]).cpu().long()
    weights = None
    if all(w is not None and w.shape == i.shape for w, i in zip(trace.weights, trace.ids)):
        weights = torch.cat([_pad_k(w.float(), k, 0.0) for w in trace.weights]).cpu()
    counts = torch.tensor([t.shape[0] for t in trace.ids], dtype=torch.long)
    step_of_call = torch.tensor(trace.steps, dtype=torch.long)
    step = torch.repeat_interleave(step_of_call, counts)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(int(counts.sum())) - torch.repeat_interleave(starts, counts)
    real = torch.cat([_mask_for(steps, s, t.shape[0]) for s, t in zip(trace.steps, trace.ids)])
    return LayerCalls(layer.num_experts, layer.params_per_expert, ids, weights, step, position, real)


def _mask_for(steps: list[Step], s: int, n: int) -> torch.Tensor:
    """The padding mask of step ``s`` for ``n`` rows (all real when the rows are not ``batch x seq``)."""
    mask = steps[s].mask if 0 <= s < len(steps) else None
    return mask if mask is not None and mask.numel() == n else torch.ones(n, dtype=torch.bool)


def steps_to_cpu(steps: list[Step]) -> list[Step]:
    """The steps with their padding masks on the CPU, moved in one transfer."""
    masks = [s.mask for s in steps if s.mask is not None]
    if not masks:
        return list(steps)
    flat = torch.cat([m.to(masks[0].device) for m in masks]).cpu().split([m.numel() for m in masks])
    it = iter(flat)
    return [Step(s.phase, s.batch, s.seq, None if s.mask is None else next(it)) for s in steps]


def _pad_k(t: torch.Tensor, k: int, fill: float | int = -1) -> torch.Tensor:
    if t.shape[1] == k:
        return t
    return torch.cat([t, torch.full((t.shape[0], k - t.shape[1]), fill, dtype=t.dtype, device=t.device)], dim=1)


def usage(calls: LayerCalls) -> torch.Tensor:
    """Bool [N, E]: which experts each captured token row used (ids < 0 are padding of k)."""
    used = torch.zeros(calls.ids.shape[0], calls.num_experts + 1, dtype=torch.bool)
    ids = calls.ids.clone()
    ids[ids < 0] = calls.num_experts
    used.scatter_(1, ids, True)
    return used[:, : calls.num_experts]


def _stat(values: torch.Tensor) -> Stat:
    if values.numel() == 0:
        return Stat(None, None, None)
    return Stat(float(values.double().mean()), int(values.min()), int(values.max()))


def _total(values: torch.Tensor) -> tuple[int, int]:
    """Exact integer (sum, count) behind a :class:`Stat`, so results of several ranks merge exactly."""
    return int(values.sum()), values.numel()


def summarize(
    static: CountResult,
    steps: list[Step],
    calls: list[LayerCalls],
    *,
    top_k_config: int | None,
    top_k_router: int | None,
    unused_modules: tuple[str, ...],
    layer_names: tuple[str, ...],
    wall_s: float,
) -> RuntimeInfo:
    """Measured tokens, active params, experts per token, expert load and touched params."""
    total = static.params.total
    base = total - sum(c.num_experts * c.params_per_expert for c in calls)
    n_steps = max([len(steps)] + [int(c.step.max()) + 1 for c in calls if c.step.numel()])

    # token slots: one per (step, position); a layer's rows map onto them by offset[step] + position
    size = torch.zeros(n_steps, dtype=torch.long)
    for c in calls:
        if c.step.numel():
            size = torch.maximum(size, torch.bincount(c.step, minlength=n_steps))
    offset = torch.cumsum(size, 0) - size
    tokens = dict.fromkeys(PHASES, 0)
    step_real = []
    for i, st in enumerate(steps):
        # an implicit step (a submodule called directly) has no shape: count its routed rows
        n = int(st.mask.sum()) if st.mask is not None else (st.batch * st.seq or int(size[i]))
        step_real.append(n)
        tokens[st.phase] = tokens.get(st.phase, 0) + n
    acc = torch.zeros(int(size.sum()), dtype=torch.long)
    seen = torch.zeros(int(size.sum()), dtype=torch.bool)
    slot_step = torch.repeat_interleave(torch.arange(n_steps), size)

    distinct_all, loads, touched_run = [], [], []
    touched = torch.zeros(n_steps, len(calls), dtype=torch.long)
    measured_k: set[int] = set()
    for li, c in enumerate(calls):
        used = usage(c) & c.real[:, None]
        distinct = used.sum(1)
        distinct_all.append(distinct[c.real])
        if c.ids.numel():
            measured_k.add(int(c.ids.shape[1]))
        valid = (c.ids >= 0) & c.real[:, None]
        loads.append(tuple(int(x) for x in torch.bincount(c.ids[valid], minlength=c.num_experts)[: c.num_experts]))
        touched_run.append(int(used.any(0).sum()))
        key = (offset[c.step] + c.position)[c.real]
        acc.index_add_(0, key, distinct[c.real] * c.params_per_expert)
        seen[key] = True
        per_step = torch.zeros(n_steps, c.num_experts, dtype=torch.long).index_add_(0, c.step, used.long())
        touched[:, li] = (per_step > 0).sum(1)

    values = base + acc[seen]
    value_step = slot_step[seen]
    phase_ids = torch.tensor([PHASES.index(st.phase) for st in steps] + [0] * (n_steps - len(steps)), dtype=torch.long)
    value_phase = phase_ids[value_step] if value_step.numel() else value_step
    emb, head = static.params.by_group["embeddings"], static.params.by_group["lm_head"]
    tied = bool(static.params.tied) and head == 0
    offsets = {"all": 0, "exclude_input_embedding": 0 if tied else emb, "exclude_embeddings": emb + head}

    if calls:
        active = {conv: _stat(values - off) for conv, off in offsets.items()}
        by_phase = {p: _stat(values[value_phase == i]) for i, p in enumerate(PHASES)}
        totals = {f"active_params_per_token.{conv}": _total(values - off) for conv, off in offsets.items()}
        totals |= {f"active_params_per_token_by_phase.{p}": _total(values[value_phase == i])
                   for i, p in enumerate(PHASES)}
        sums = torch.zeros(n_steps, dtype=torch.float64).index_add_(0, value_step, values.double())
        counts = torch.bincount(value_step, minlength=n_steps)
        step_mean = [float(sums[i] / counts[i]) if counts[i] else None for i in range(n_steps)]
        params_touched = base + sum(t * c.params_per_expert for t, c in zip(touched_run, calls))
    else:  # dense model: every real token uses every parameter
        def full(n: int, off: int = 0) -> Stat:
            return Stat(float(total - off), total - off, total - off) if n else Stat(None, None, None)

        active = {conv: full(sum(step_real), off) for conv, off in offsets.items()}
        by_phase = {p: full(tokens[p]) for p in PHASES}
        totals = {f"active_params_per_token.{conv}": (sum(step_real) * (total - off), sum(step_real))
                  for conv, off in offsets.items()}
        totals |= {f"active_params_per_token_by_phase.{p}": (tokens[p] * total, tokens[p]) for p in PHASES}
        step_mean = [float(total) if n else None for n in step_real]
        params_touched = total

    step_records = tuple(
        StepRecord(
            phase=st.phase,
            tokens=step_real[i],
            experts_touched=tuple(int(x) for x in touched[i]),
            active_params_per_token_mean=step_mean[i],
            params_touched=base + sum(int(t) * c.params_per_expert for t, c in zip(touched[i], calls)),
        )
        for i, st in enumerate(steps)
    )
    distinct_cat = torch.cat(distinct_all) if distinct_all else torch.zeros(0, dtype=torch.long)
    totals["experts_per_token"] = _total(distinct_cat)
    return RuntimeInfo(
        tokens=tokens,
        active_params_per_token=active,
        active_params_per_token_by_phase=by_phase,
        experts_per_token=_stat(distinct_cat),
        top_k={"config": top_k_config, "router": top_k_router, "measured": max(measured_k) if measured_k else None},
        expert_load=tuple(loads),
        params_touched=params_touched,
        steps=step_records,
        unused_modules=unused_modules,
        moe_layer_names=layer_names,
        forward_calls=len(steps),
        wall_s=wall_s,
        sums=totals,
    )


def reconcile(static: CountResult, rt: RuntimeInfo, calls: list[LayerCalls]) -> tuple[ReconcileRow, ...]:
    """Static vs measured, one row per quantity, with the cause of each difference in ``note``."""
    from ..static import active_per_token

    rows = []
    s_all = static.params.active_per_token["all"]
    m = rt.active_params_per_token["all"]
    k_cfg, k_router, k_meas = rt.top_k["config"], rt.top_k["router"], rt.top_k["measured"]
    if m.mean is None:
        rows.append(ReconcileRow("active params per token", s_all, None, None, "no token was tracked"))
        return tuple(rows)
    delta = m.mean - s_all
    if static.moe is None:
        note = "dense model: every token uses every parameter"
    elif delta == 0 and m.min == m.max:
        note = "equal: every token used exactly the router's k experts in every MoE layer"
    elif rt.experts_per_token.min is not None and rt.experts_per_token.min < (k_router or 0):
        note = "some tokens used fewer distinct experts than the router's k (repeated, skipped or dropped experts)"
    elif k_meas is not None and k_router is not None and k_meas != k_router:
        note = f"routers now pick {k_meas} experts, the static count assumed k={k_router}"
    else:
        note = "measured differs from static: see experts per token and expert load"
    rows.append(ReconcileRow("active params per token (all)", s_all, m.mean, delta, note))
    if static.moe is not None:
        rows.append(ReconcileRow(
            "experts per token per MoE layer", k_router, rt.experts_per_token.mean,
            None if k_router is None or rt.experts_per_token.mean is None else rt.experts_per_token.mean - k_router,
            "distinct experts each token used, from the routers' own top-k output",
        ))
        if k_cfg is not None and k_cfg != k_router:
            at_cfg = active_per_token(static.params.total, static.params.by_group, static.moe.layers,
                                      bool(static.params.tied), top_ks=[k_cfg] * len(static.moe.layers))["all"]
            rows.append(ReconcileRow(
                f"active params per token at config k={k_cfg}", at_cfg, m.mean, m.mean - at_cfg,
                f"MISMATCH: config.num_experts_per_tok={k_cfg} but the routers hold k={k_router} and measured "
                f"k={k_meas}; routers copy k at init, so a config change after loading does nothing "
                f"(use runprof.set_top_k)",
            ))
        rows.append(ReconcileRow(
            "params touched in the run", static.params.total, rt.params_touched,
            rt.params_touched - static.params.total,
            "all experts used at least once" if rt.params_touched == static.params.total
            else "some experts were never used in this run",
        ))
    return tuple(rows)
