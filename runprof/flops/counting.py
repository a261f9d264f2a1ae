"""FLOPs of a tracked run: a model's :class:`ModelFlops` multiplied by the rows each step computed (the step
hook's records: batch, sequence, attended context, rows with logits) and by the routed experts' measured loads
(assignments over every row computed, padding included). Works on Python ints after the region: no hook."""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from ..results import Stat
from ..results.flops import FLOP_GROUPS, FLOP_PHASES, FlopsInfo
from .structure import ModelFlops, Weight

if TYPE_CHECKING:
    from ..tracking.collectors import StepMeta


@dataclass
class StepFlops:
    """One step's FLOPs by group (experts excluded) and its attention core in both conventions."""

    groups: dict[str, int]
    core_causal: int
    core_eager: int


_BLOCK = re.compile(r"^(.*?\.\d+)(\.|$)")


def _block(name: str) -> str | None:
    """The repeated block a module belongs to (``model.layers.3``), None outside one."""
    m = _BLOCK.match(name)
    return m[1] if m else None


def dead_blocks(weights: Sequence[Weight], unused: frozenset[str] | None) -> set[str]:
    """Blocks (``model.layers.N``, ``mtp.N``) none of whose weights ran: a layer the model built but never
    called. A single weight that did not run as a module may still have run (``F.linear(x, child.weight)``, as
    Longcat-Flash's router does), so only whole blocks are left out."""
    if unused is None:
        return set()
    seen: dict[str, bool] = {}
    for w in weights:
        b = _block(w.name)
        if b is not None:
            seen[b] = seen.get(b, False) or w.name not in unused
    return {b for b, ran in seen.items() if not ran}


def _ran(weights: Sequence[Weight], dead: set[str]) -> list[Weight]:
    return [w for w in weights if _block(w.name) not in dead]


def step_flops(mf: ModelFlops, weights: list[Weight], m: StepMeta) -> StepFlops:
    """The FLOPs of one forward call of ``m.batch`` rows × ``m.seq`` positions, routed experts excluded."""
    rows, past = m.batch * m.seq, max(m.context - m.seq, 0)
    groups: dict[str, int] = defaultdict(int)
    keys = [core.keys(past, m.seq) for core in mf.cores]
    for w in weights:
        n = rows if w.rows == "rows" else m.logits_rows if w.rows == "logits" else m.batch * keys[w.core or 0]
        groups[w.group] += n * w.flops_per_row
    causal = sum(m.batch * core.attended(past, m.seq) * core.flops_per_pair for core in mf.cores)
    eager = sum(rows * t * core.flops_per_pair for core, t in zip(mf.cores, keys))
    groups["attention_core"] += causal
    return StepFlops(dict(groups), causal, eager)


def _experts_by_phase(mf: ModelFlops, load_all: torch.Tensor, rows: dict[str, int]) -> dict[str, int]:
    out = {}
    for p, phase in enumerate(FLOP_PHASES):
        total = 0
        for layer, cost in enumerate(mf.experts):
            if cost.dense:
                total += rows.get(phase, 0) * cost.num_experts * cost.flops_per_assignment
            else:
                total += int(load_all[p, layer, :cost.num_experts].sum()) * cost.flops_per_assignment
        out[phase] = total
    return out


def _experts_per_step(mf: ModelFlops, meta: Sequence[StepMeta], load_all: torch.Tensor,
                      kseen: Sequence[int]) -> list[int] | None:
    """Each step's routed-expert FLOPs, when each row's assignments are known: every step's rows × k add up to
    the measured assignments of its phase in every layer (a row never has more than k), so each step had
    exactly rows × k. None otherwise (skipped or zero-computation experts, k changed inside the region)."""
    if not mf.experts:
        return [0] * len(meta)
    for p, phase in enumerate(FLOP_PHASES):
        rows = sum(m.batch * m.seq for m in meta if m.phase == phase)
        for layer, cost in enumerate(mf.experts):
            if not cost.dense and rows * kseen[layer] != int(load_all[p, layer, :cost.num_experts].sum()):
                return None
    per_row = sum((c.num_experts if c.dense else k) * c.flops_per_assignment for c, k in zip(mf.experts, kseen))
    return [m.batch * m.seq * per_row for m in meta]


def _per_row(total: int, rows: int) -> Stat:
    return Stat(total, rows, total // rows, -(-total // rows)) if rows else Stat()


def count_flops(mf: ModelFlops, meta: Sequence[StepMeta], *, n_steps: int, rows: dict[str, int],
                load_all: torch.Tensor | None, kseen: Sequence[int], unused: frozenset[str] | None) -> FlopsInfo | None:
    """The run's FLOPs, or None when they cannot be measured: per-step records truncated, rows the step hook did
    not see (a routing call before any forward), or an MoE model whose routing was not captured completely."""
    if len(meta) != n_steps or sum(m.batch * m.seq for m in meta) != sum(rows.values()):
        return None
    if mf.experts and load_all is None:
        return None
    dead = dead_blocks(mf.weights, unused)
    weights = _ran(mf.weights, dead) if dead else list(mf.weights)
    steps = [step_flops(mf, weights, m) for m in meta]
    experts = _experts_by_phase(mf, load_all, rows) if mf.experts else dict.fromkeys(FLOP_PHASES, 0)
    per_step_experts = _experts_per_step(mf, meta, load_all, kseen) if mf.experts else [0] * len(meta)
    by_group = dict.fromkeys(FLOP_GROUPS, 0)
    by_phase = dict(experts)
    eager_extra = 0
    for m, s in zip(meta, steps):
        for g, v in s.groups.items():
            by_group[g if g in by_group else "other"] += v
        by_phase[m.phase] += sum(s.groups.values())
        eager_extra += s.core_eager - s.core_causal
    by_group["routed_experts"] += sum(experts.values())
    total = sum(by_phase.values())
    if per_step_experts is None:
        per_step = None
        per_token = sum((_per_row(by_phase[ph], rows.get(ph, 0)) for ph in FLOP_PHASES), Stat())
    else:
        per_step = tuple(sum(s.groups.values()) + e for s, e in zip(steps, per_step_experts))
        per_token = sum((_per_row(f, m.batch * m.seq) for f, m in zip(per_step, meta)), Stat())
    not_covered = tuple(n for n in mf.not_covered if _block(n) not in dead)
    return FlopsInfo(total, total + eager_extra, by_phase, by_group, per_token, per_step, not_covered)


__all__ = ["StepFlops", "count_flops", "step_flops"]
