"""The result of a tracked run: static counts, what ran, how the two reconcile, and the memory ledger."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import InvalidArgumentError
from .common import CONVENTIONS, Env, Stat, fill_env, restore_env
from .count import ByteCounts, CountResult, ModelInfo, MoEInfo, ParamCounts
from .counts import Observation, TokenCounts
from .flops import FlopsInfo, UtilizationInfo
from .memory import MemoryLedger
from .perf import LatencyInfo
from .reconcile import ReconcileRow, reconcile
from .tokens import TokenView

PHASES: tuple[str, ...] = ("prefill", "decode", "train")

RANK_LOCAL: tuple[str, ...] = ("steps", "memory", "placement", "weights_diff", "latency", "flops", "utilization")
"""What results of several ranks do not merge: each rank's own result keeps it."""


@dataclass(frozen=True)
class StepRecord:
    """One forward call inside the tracked region."""

    phase: str  # "prefill" or "decode"
    tokens: int  # unmasked tokens in this step
    experts_touched: tuple[int, ...]  # distinct experts used by the step's tokens, per MoE layer
    active_params_per_token_mean: float | None
    params_touched: int | None  # shared params + union of experts this step used, x params per expert

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "tokens": self.tokens,
            "experts_touched": list(self.experts_touched),
            "active_params_per_token_mean": self.active_params_per_token_mean,
            "params_touched": self.params_touched,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepRecord:
        return cls(d["phase"], d["tokens"], tuple(d["experts_touched"]), d["active_params_per_token_mean"],
                   d["params_touched"])


@dataclass(frozen=True)
class RuntimeInfo:
    """What the tracked region measured. Every :class:`Stat` carries its exact sum and count, so runtimes
    of several runs or ranks add exactly (:meth:`TrackResult.combine`)."""

    tokens: dict[str, int]  # {"prefill": n, "decode": n}
    active_params_per_token: dict[str, Stat]  # by convention: all / exclude_input_embedding / ...
    active_params_per_token_by_phase: dict[str, Stat]  # "all" convention, by phase
    experts_per_token: Stat  # distinct experts a token used, per MoE layer
    top_k: dict[str, int | None]  # {"config", "router", "measured"}
    expert_load: tuple[tuple[int, ...], ...]  # [moe layer][expert] assignments
    params_touched: int | None  # shared params + union over the run of experts used (None: not measured)
    steps: tuple[StepRecord, ...]
    unused_modules: tuple[str, ...]  # modules with parameters that never ran
    moe_layer_names: tuple[str, ...]
    forward_calls: int
    wall_s: float
    counts: TokenCounts | None = None  # prompt / generated tokens, rows computed
    observation: Observation = field(default_factory=Observation)
    expert_load_computed: tuple[tuple[int, ...], ...] = ()  # [layer][expert] over every row computed
    latency: LatencyInfo | None = None  # per forward call; rank-local (None in merged results)
    coactivation: tuple | None = None  # track(coactivation=True): [layer][a][b] real tokens that chose a and b
    router_weight_sums: tuple | None = None  # track(weights=True): [layer][expert] Σ router weight, real tokens
    flops: FlopsInfo | None = None  # FLOPs of the run (None: not measured); rank-local (None in merged results)
    # FLOP/s, MFU, bytes moved vs the device's peaks; rank-local. Derived from flops, steps and latency (timings):
    # left out of equality, so runtimes that measured the same compare equal whatever their clocks said
    utilization: UtilizationInfo | None = field(default=None, compare=False)

    def stats(self) -> list[Stat]:
        """Every statistic, in a fixed order (conventions, phases, experts per token): what merges pack."""
        return [*self.active_params_per_token.values(), *self.active_params_per_token_by_phase.values(),
                self.experts_per_token]

    def with_stats(self, stats: list[Stat]) -> dict[str, Any]:
        """The fields :meth:`stats` reads, rebuilt from ``stats`` in the same order."""
        convs, phases = list(self.active_params_per_token), list(self.active_params_per_token_by_phase)
        return {"active_params_per_token": dict(zip(convs, stats[:len(convs)])),
                "active_params_per_token_by_phase": dict(zip(phases, stats[len(convs):len(convs) + len(phases)])),
                "experts_per_token": stats[len(convs) + len(phases)]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": dict(self.tokens),
            "active_params_per_token": self.active_params_per_token["all"].to_dict(),
            "active_params_per_token_by_convention": {
                k: v.to_dict() for k, v in self.active_params_per_token.items()},
            "active_params_per_token_by_phase": {
                k: v.to_dict() for k, v in self.active_params_per_token_by_phase.items()},
            "experts_per_token": self.experts_per_token.to_dict(),
            "top_k": dict(self.top_k),
            "expert_load": [list(r) for r in self.expert_load],
            "params_touched": self.params_touched,
            "steps": [s.to_dict() for s in self.steps],
            "unused_modules": list(self.unused_modules),
            "moe_layer_names": list(self.moe_layer_names),
            "forward_calls": self.forward_calls,
            "wall_s": self.wall_s,
            "counts": None if self.counts is None else self.counts.to_dict(),
            "observation": self.observation.to_dict(),
            "expert_load_computed": [list(r) for r in self.expert_load_computed],
            "latency": None if self.latency is None else self.latency.to_dict(),
            "coactivation": None if self.coactivation is None else [[list(r) for r in m] for m in self.coactivation],
            "router_weight_sums": None if self.router_weight_sums is None else [list(r) for r in
                                                                                 self.router_weight_sums],
            "flops": None if self.flops is None else self.flops.to_dict(),
            "utilization": None if self.utilization is None else self.utilization.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RuntimeInfo:
        conv, phase, k = (d["active_params_per_token_by_convention"], d["active_params_per_token_by_phase"],
                          d["top_k"])
        return cls(  # every key the renderers read, read here: a missing one is a KeyError naming it
            tokens={p: d["tokens"][p] for p in PHASES},
            active_params_per_token={c: Stat.from_dict(conv[c]) for c in CONVENTIONS},
            active_params_per_token_by_phase={p: Stat.from_dict(phase[p]) for p in PHASES},
            experts_per_token=Stat.from_dict(d["experts_per_token"]),
            top_k={x: k[x] for x in ("config", "router", "measured")},
            expert_load=tuple(tuple(r) for r in d["expert_load"]),
            params_touched=d["params_touched"],
            steps=tuple(StepRecord.from_dict(s) for s in d["steps"]),
            unused_modules=tuple(d["unused_modules"]),
            moe_layer_names=tuple(d["moe_layer_names"]),
            forward_calls=d["forward_calls"],
            wall_s=d["wall_s"],
            counts=None if d["counts"] is None else TokenCounts.from_dict(d["counts"]),
            observation=Observation.from_dict(d["observation"]),
            expert_load_computed=tuple(tuple(r) for r in d["expert_load_computed"]),
            latency=None if d.get("latency") is None else LatencyInfo.from_dict(d["latency"]),
            coactivation=None if d.get("coactivation") is None else tuple(
                tuple(tuple(r) for r in m) for m in d["coactivation"]),
            router_weight_sums=None if d.get("router_weight_sums") is None else tuple(
                tuple(r) for r in d["router_weight_sums"]),
            flops=None if d.get("flops") is None else FlopsInfo.from_dict(d["flops"]),
            utilization=None if d.get("utilization") is None else UtilizationInfo.from_dict(d["utilization"]),
        )


@dataclass(frozen=True)
class TrackResult:
    """Result of ``runprof.track``: static counts, what ran, and the reconciliation of the two."""

    static: CountResult
    runtime: RuntimeInfo
    reconcile: tuple[ReconcileRow, ...]
    memory: MemoryLedger | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tokens: TokenView | None = None  # the per-token view of one sequence (the run's --html keeps it)
    env: Env | None = field(default=None, compare=False)  # versions, device, time: filled when made

    KIND = "run"

    def __post_init__(self) -> None:
        fill_env(self, self.static.model.device)

    @property
    def model(self) -> ModelInfo:
        return self.static.model

    @property
    def params(self) -> ParamCounts:
        return self.static.params

    @property
    def moe(self) -> MoEInfo | None:
        return self.static.moe

    @property
    def bytes(self) -> ByteCounts:
        return self.static.bytes

    def to_dataframe(self, what: str) -> Any:
        """One table of this run as a ``pandas.DataFrame``: ``expert_load``, ``layers``, ``steps`` or ``memory``
        (:mod:`runprof.results.frames`; needs ``pip install runprof[frames]``)."""
        from .frames import to_dataframe

        return to_dataframe(self, what)

    def to_dict(self) -> dict[str, Any]:
        d = self.static.to_dict()
        d["kind"] = self.KIND
        if self.env is not None:
            d["env"] = self.env.to_dict()
        else:
            d.pop("env", None)
        d["runtime"] = self.runtime.to_dict()
        d["reconcile"] = [r.to_dict() for r in self.reconcile]
        d["memory"] = None if self.memory is None else self.memory.to_dict()
        if self.extra:
            d["extra"] = self.extra
        d["tokens"] = None if self.tokens is None else self.tokens.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrackResult:
        static = CountResult.from_dict(d, kind=cls.KIND)
        if not isinstance(d.get("runtime"), Mapping):
            raise InvalidArgumentError("a saved run result needs a 'runtime' object; this JSON has none")
        return restore_env(cls(
            static=static,
            runtime=RuntimeInfo.from_dict(d["runtime"]),
            reconcile=tuple(ReconcileRow.from_dict(r) for r in d["reconcile"]),
            memory=None if d.get("memory") is None else MemoryLedger.from_dict(d["memory"]),
            extra=_extra(d.get("extra")),
            tokens=None if d.get("tokens") is None else TokenView.from_dict(d["tokens"]),
        ), d)

    @staticmethod
    def combine(*results: TrackResult, parallel: bool = False) -> TrackResult:
        """One result for several tracked runs of the same model, exactly as if one tracker had seen them all:
        tokens, loads, forward calls and every statistic's sum and count add up, min/max take the extremes,
        ``params_touched`` is the union of experts used, the reconcile rows are recomputed. Sequential runs
        (``parallel=False``) add their wall times and keep their steps in order; parallel ones (ranks) take
        the slowest wall time and keep no steps. Memory ledgers and rank-local extras do not combine.

        >>> merged = TrackResult.combine(first.result, second.result)  # doctest: +SKIP
        """
        if not results:
            raise InvalidArgumentError("TrackResult.combine needs at least one result")
        first = results[0]
        for r in results[1:]:
            if r.static.params.total != first.static.params.total or r.runtime.moe_layer_names != \
                    first.runtime.moe_layer_names or [len(x) for x in r.runtime.expert_load] != \
                    [len(x) for x in first.runtime.expert_load]:
                raise InvalidArgumentError("TrackResult.combine: the results describe different models")
        rts = [r.runtime for r in results]
        stats = [sum(column, Stat()) for column in zip(*(rt.stats() for rt in rts))]
        loads = _add_loads([rt.expert_load for rt in rts])
        counts = [rt.counts for rt in rts]
        measured = [rt.top_k.get("measured") for rt in rts if rt.top_k.get("measured") is not None]
        runtime = RuntimeInfo(
            tokens={p: sum(rt.tokens.get(p, 0) for rt in rts) for p in first.runtime.tokens},
            top_k={**first.runtime.top_k, "measured": max(measured) if measured else None},
            expert_load=loads,
            params_touched=touched_params(first.static, loads) if all(
                rt.params_touched is not None for rt in rts) else None,
            steps=() if parallel else tuple(s for rt in rts for s in rt.steps),
            unused_modules=tuple(n for n in first.runtime.unused_modules
                                 if all(n in rt.unused_modules for rt in rts)),
            moe_layer_names=first.runtime.moe_layer_names,
            forward_calls=sum(rt.forward_calls for rt in rts),
            wall_s=max(rt.wall_s for rt in rts) if parallel else sum(rt.wall_s for rt in rts),
            counts=None if any(c is None for c in counts) else sum(counts[1:], counts[0]),
            observation=combined_observation([rt.observation for rt in rts]),
            expert_load_computed=_add_loads([rt.expert_load_computed for rt in rts]),
            flops=_add_flops([rt.flops for rt in rts], parallel),
            **first.runtime.with_stats(stats),
        )
        return first.with_runtime(runtime, extra=combined_extra(results))

    def with_runtime(self, runtime: RuntimeInfo, *, extra: dict[str, Any]) -> TrackResult:
        """This result's static counts with another runtime (reconcile recomputed, no memory ledger)."""
        return TrackResult(static=self.static, runtime=runtime, reconcile=reconcile(self.static, runtime),
                           memory=None, extra=extra)


def _extra(extra: Any) -> dict[str, Any]:
    """A saved run's ``extra``, with the parts the report reads checked (notes: a list of strings)."""
    extra = dict(extra or {})
    notes = extra.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(x, str) for x in notes):
        raise InvalidArgumentError("extra.notes is not a list of strings")
    return extra


def _add_loads(loads: list[tuple[tuple[int, ...], ...]]) -> tuple[tuple[int, ...], ...]:
    if any(len(x) != len(loads[0]) for x in loads):  # a run without routing capture has no loads
        return ()
    return tuple(tuple(sum(col) for col in zip(*layer)) for layer in zip(*loads))


def _add_flops(flops: list[FlopsInfo | None], parallel: bool) -> FlopsInfo | None:
    """The FLOPs of sequential runs: exact sums where every run has them. Parallel ones (ranks): None, as
    ``merge_across_ranks`` leaves them (rank-local, like latency), so that merge and combine stay one function."""
    if parallel or any(f is None for f in flops):
        return None
    return sum(flops[1:], flops[0])


def combined_observation(obs: list[Observation]) -> Observation:
    """Several runs' observations: counts add, any compiled/traced run marks the whole, notes are kept once."""
    notes = []
    for o in obs:
        notes += [n for n in o.notes if n not in notes]
    return Observation(compiled=any(o.compiled for o in obs), trace=all(o.trace for o in obs),
                       steps=sum(o.steps for o in obs), steps_kept=sum(o.steps_kept for o in obs),
                       missed_layer_steps=sum(o.missed_layer_steps for o in obs),
                       misaligned_layer_steps=sum(o.misaligned_layer_steps for o in obs),
                       recomputed_calls=sum(o.recomputed_calls for o in obs), notes=tuple(notes))


def combined_extra(results: tuple[TrackResult, ...]) -> dict[str, Any]:
    """Extras that survive a merge: everything but the rank-local ones; weights changed if any run changed them."""
    extra = {k: v for k, v in results[0].extra.items() if k not in RANK_LOCAL}
    changed = [r.extra["weights_changed"] for r in results if "weights_changed" in r.extra]
    if changed:
        extra["weights_changed"] = any(changed)
    return extra


def touched_params(static: CountResult, loads: tuple[tuple[int, ...], ...]) -> int:
    """Params touched by a run with these expert loads: everything but routed experts, plus each expert
    that was used at least once."""
    if static.moe is None:
        return static.params.total
    base = static.params.total - static.moe.routed_params
    return base + sum(sum(1 for x in load if x) * layer.params_per_expert
                      for layer, load in zip(static.moe.layers, loads))


__all__ = ["PHASES", "RANK_LOCAL", "RuntimeInfo", "combined_extra", "combined_observation", "StepRecord", "TrackResult", "touched_params"]
