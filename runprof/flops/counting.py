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
from .attention import AttentionCore
from .structure import ModelFlops, Weight

if TYPE_CHECKING:
    from ..tracking.collectors import StepMeta, StepRun


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


@dataclass(frozen=True)
class StepPlan:
    """A model's per-step FLOPs formula with equal terms folded: the weights summed per (group, rows they see,
    attention class) and the attention cores per class (kind and window: the keys and attended pairs of a call
    depend on nothing else), so that a step costs a few multiplications whatever the number of layers."""

    classes: tuple[AttentionCore, ...]  # one core per class (its kind and window)
    pairs: tuple[int, ...]  # per class: Σ flops_per_pair of its cores
    kv_bytes: tuple[int, ...]  # per class: Σ kv_bytes_per_position of its cores
    terms: tuple[tuple[str, str, int, int], ...]  # (group, rows, class, Σ flops_per_row)
    bytes_per_expert: tuple[int, ...]  # per MoE layer: bytes of one routed expert
    dense_expert_bytes: int  # Σ over dense-expert layers (every expert runs) of E x bytes per expert

    @staticmethod
    def of(mf: ModelFlops, weights: Sequence[Weight]) -> StepPlan:
        index: dict[tuple, int] = {}
        of_core, classes, pairs, kv = [], [], [], []
        for core in mf.cores:
            c = index.setdefault((core.kind, core.window), len(classes))
            if c == len(classes):
                classes.append(core)
                pairs.append(0)
                kv.append(0)
            pairs[c] += core.flops_per_pair
            kv[c] += core.kv_bytes_per_position
            of_core.append(c)
        terms: dict[tuple[str, str, int], int] = defaultdict(int)
        for w in weights:
            terms[(w.group, w.rows, of_core[w.core or 0] if w.rows == "keys" else 0)] += w.flops_per_row
        return StepPlan(tuple(classes), tuple(pairs), tuple(kv), tuple((*k, v) for k, v in terms.items()),
                        tuple(0 if c.dense else c.bytes_per_expert for c in mf.experts),
                        sum(c.num_experts * c.bytes_per_expert for c in mf.experts if c.dense))


def step_flops(mf: ModelFlops, weights: Sequence[Weight], m: StepMeta, plan: StepPlan | None = None) -> StepFlops:
    """The FLOPs of one forward call of ``m.batch`` rows × ``m.seq`` positions, routed experts excluded
    (``plan``: :meth:`StepPlan.of` of the same weights, computed once for many steps)."""
    plan = plan or StepPlan.of(mf, weights)
    rows, past = m.batch * m.seq, max(m.context - m.seq, 0)
    keys = [core.keys(past, m.seq) for core in plan.classes]
    groups: dict[str, int] = defaultdict(int)
    for group, seen, c, per_row in plan.terms:
        n = rows if seen == "rows" else m.logits_rows if seen == "logits" else m.batch * keys[c]
        groups[group] += n * per_row
    causal = sum(m.batch * core.attended(past, m.seq) * f for core, f in zip(plan.classes, plan.pairs))
    eager = sum(rows * t * f for t, f in zip(keys, plan.pairs))
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


def _expert_flops_per_row(mf: ModelFlops, rows: dict[str, int], load_all: torch.Tensor,
                          kseen: Sequence[int]) -> int | None:
    """The routed experts' FLOPs of every row, when each row's assignments are known: every phase's rows × k
    (``rows``: rows per phase the step records saw) equal the measured assignments in every layer (a row never
    has more than k), so each row had exactly k. None otherwise (skipped or zero-computation experts, k changed
    inside the region)."""
    for p, phase in enumerate(FLOP_PHASES):
        for layer, cost in enumerate(mf.experts):
            if not cost.dense and rows.get(phase, 0) * kseen[layer] != int(load_all[p, layer, :cost.num_experts].sum()):
                return None
    return sum((c.num_experts if c.dense else k) * c.flops_per_assignment for c, k in zip(mf.experts, kseen))


def run_flops(mf: ModelFlops, weights: Sequence[Weight], run: StepRun, plan: StepPlan) -> StepFlops:
    """The summed FLOPs of a :class:`StepRun`'s calls, routed experts excluded: each call's rows, logits rows
    and keys (summed in closed form), and the attended pairs of contiguous calls as one call of
    ``count × seq`` positions."""
    past, rows = max(run.context - run.seq, 0), run.batch * run.seq
    keys = [core.keys_sum(past, run.seq, run.count) for core in plan.classes]
    groups: dict[str, int] = defaultdict(int)
    for group, seen, c, per_row in plan.terms:
        n = rows * run.count if seen == "rows" else run.logits_rows * run.count if seen == "logits" else \
            run.batch * keys[c]
        groups[group] += n * per_row
    causal = sum(run.batch * core.attended(past, run.seq * run.count) * f for core, f in zip(plan.classes, plan.pairs))
    eager = sum(rows * t * f for t, f in zip(keys, plan.pairs))
    groups["attention_core"] += causal
    return StepFlops(dict(groups), causal, eager)


def _per_row(total: int, rows: int) -> Stat:
    return Stat(total, rows, total // rows, -(-total // rows)) if rows else Stat()


def count_flops(mf: ModelFlops, meta: Sequence[StepMeta], *, n_steps: int, rows: dict[str, int],
                load_all: torch.Tensor | None, kseen: Sequence[int], unused: frozenset[str] | None,
                runs: Sequence[StepRun] = ()) -> FlopsInfo | None:
    """The run's FLOPs, or None when they cannot be measured: steps the step hook did not record (neither as a
    kept step nor in a run past ``max_steps``), rows it did not see (a routing call before any forward), or an
    MoE model whose routing was not captured completely."""
    seen = dict.fromkeys(FLOP_PHASES, 0)
    for m in meta:
        seen[m.phase] += m.batch * m.seq
    for r in runs:
        seen[r.phase] += r.batch * r.seq * r.count
    if len(meta) + sum(r.count for r in runs) != n_steps or sum(seen.values()) != sum(rows.values()):
        return None
    if mf.experts and load_all is None:
        return None
    dead = dead_blocks(mf.weights, unused)
    weights = _ran(mf.weights, dead) if dead else list(mf.weights)
    plan = StepPlan.of(mf, weights)
    steps = [step_flops(mf, weights, m, plan) for m in meta]
    folded = [run_flops(mf, weights, r, plan) for r in runs]
    experts = _experts_by_phase(mf, load_all, rows) if mf.experts else dict.fromkeys(FLOP_PHASES, 0)
    per_row = _expert_flops_per_row(mf, seen, load_all, kseen) if mf.experts else 0
    by_group, by_phase, eager_extra = dict.fromkeys(FLOP_GROUPS, 0), dict(experts), 0
    for phase, s in [*((m.phase, s) for m, s in zip(meta, steps)), *((r.phase, f) for r, f in zip(runs, folded))]:
        for g, v in s.groups.items():
            by_group[g if g in by_group else "other"] += v
        by_phase[phase] += sum(s.groups.values())
        eager_extra += s.core_eager - s.core_causal
    by_group["routed_experts"] += sum(experts.values())
    total = sum(by_phase.values())
    if per_row is None:
        per_step = None
        per_token = sum((_per_row(by_phase[ph], rows.get(ph, 0)) for ph in FLOP_PHASES), Stat())
    else:
        per_step = tuple(sum(s.groups.values()) + m.batch * m.seq * per_row for s, m in zip(steps, meta))
        per_token = sum((_per_row(f, m.batch * m.seq) for f, m in zip(per_step, meta)), Stat())
        for r, f in zip(runs, folded):  # a run's heaviest call is its last (its keys only grow)
            first, last = (sum(step_flops(mf, weights, x, plan).groups.values()) + r.batch * r.seq * per_row
                           for x in (r.first(), r.last()))
            rows_r = r.batch * r.seq
            per_token += Stat(sum(f.groups.values()) + rows_r * r.count * per_row, rows_r * r.count,
                              first // rows_r, -(-last // rows_r)) if rows_r else Stat()
    not_covered = tuple(n for n in mf.not_covered if _block(n) not in dead)
    return FlopsInfo(total, total + eager_extra, by_phase, by_group, per_token, per_step, not_covered)


__all__ = ["StepFlops", "StepPlan", "count_flops", "run_flops", "step_flops"]
