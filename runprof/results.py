"""Frozen results in base units (params, bytes, seconds), with ``to_dict``/``from_dict``.

Results are what collectors produce and renderers consume: they hold numbers, never display strings.
``to_dict`` gives the JSON of the result contract in ``docs/architecture.md`` (schema ``runprof/1``);
``from_dict(to_dict(r)) == r`` holds for every result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA = "runprof/1"

GROUPS: tuple[str, ...] = (
    "embeddings",
    "attention",
    "dense_mlp",
    "routed_experts",
    "shared_experts",
    "routers",
    "norms",
    "lm_head",
    "other",
)
"""Parameter groups; every unique parameter belongs to exactly one, so groups sum to the total."""

CONVENTIONS: tuple[str, ...] = ("all", "exclude_input_embedding", "exclude_embeddings")
"""Vendor conventions for 'active params per token' (see ``docs/architecture.md``)."""


@dataclass(frozen=True)
class ModelInfo:
    """What model a result describes."""

    name: str
    class_name: str
    model_type: str
    dtype: str
    device: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class": self.class_name,
            "model_type": self.model_type,
            "dtype": self.dtype,
            "device": self.device,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        return cls(d["name"], d["class"], d["model_type"], d["dtype"], d["device"])


@dataclass(frozen=True)
class LayerPattern:
    """One row of the layer-folded table: a parameter name with layer indices replaced by ``n``."""

    name: str
    shape: tuple[int, ...]
    count: int
    params: int  # numel of one tensor x count

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "count": self.count, "params": self.params}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerPattern:
        return cls(d["name"], tuple(d["shape"]), d["count"], d["params"])


@dataclass(frozen=True)
class ParamCounts:
    """Static parameter counts (unique tensors; logical counts for packed quantized weights)."""

    total: int
    by_group: dict[str, int]
    active_per_token: dict[str, int]
    tied: tuple[tuple[str, str], ...]
    by_layer_pattern: tuple[LayerPattern, ...]
    buffers: int = 0  # numel of buffers, not part of total

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_group": dict(self.by_group),
            "active_per_token": dict(self.active_per_token),
            "tied": [list(p) for p in self.tied],
            "by_layer_pattern": [p.to_dict() for p in self.by_layer_pattern],
            "buffers": self.buffers,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ParamCounts:
        return cls(
            total=d["total"],
            by_group=dict(d["by_group"]),
            active_per_token=dict(d["active_per_token"]),
            tied=tuple(tuple(p) for p in d["tied"]),
            by_layer_pattern=tuple(LayerPattern.from_dict(p) for p in d["by_layer_pattern"]),
            buffers=d.get("buffers", 0),
        )


@dataclass(frozen=True)
class MoELayerInfo:
    """One MoE block: where it is, its experts and router, and its routed-expert size."""

    name: str
    layer_index: int | None
    experts: str
    router: str | None
    num_experts: int
    top_k: int | None  # as the router object holds it
    params_per_expert: int
    shared_params: int  # shared experts and their gates inside this block

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MoELayerInfo:
        return cls(**d)


@dataclass(frozen=True)
class MoEInfo:
    """MoE layout of a model. ``num_experts``/``top_k``/``params_per_expert`` describe the first MoE
    layer; ``layers`` has each layer's own values (they differ in a few architectures)."""

    moe_layers: int
    num_experts: int
    top_k: int | None
    top_k_config: int | None
    params_per_expert: int
    dense_layers: tuple[int, ...]
    shared_experts_params: int
    layers: tuple[MoELayerInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "moe_layers": self.moe_layers,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "top_k_config": self.top_k_config,
            "params_per_expert": self.params_per_expert,
            "dense_layers": list(self.dense_layers),
            "shared_experts_params": self.shared_experts_params,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MoEInfo:
        return cls(
            moe_layers=d["moe_layers"],
            num_experts=d["num_experts"],
            top_k=d["top_k"],
            top_k_config=d["top_k_config"],
            params_per_expert=d["params_per_expert"],
            dense_layers=tuple(d["dense_layers"]),
            shared_experts_params=d["shared_experts_params"],
            layers=tuple(MoELayerInfo.from_dict(x) for x in d["layers"]),
        )


@dataclass(frozen=True)
class ByteCounts:
    """Bytes of parameters (numel x element size, plus quantization state) and of buffers."""

    total: int
    by_dtype: dict[str, int]
    buffers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_dtype": dict(self.by_dtype), "buffers": self.buffers}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ByteCounts:
        return cls(d["total"], dict(d["by_dtype"]), d.get("buffers", 0))


@dataclass(frozen=True)
class CountResult:
    """Static counts of one model: ``runprof.count_params`` returns it."""

    model: ModelInfo
    params: ParamCounts
    moe: MoEInfo | None
    bytes: ByteCounts

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "model": self.model.to_dict(),
            "params": self.params.to_dict(),
            "moe": None if self.moe is None else self.moe.to_dict(),
            "bytes": self.bytes.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CountResult:
        return cls(
            model=ModelInfo.from_dict(d["model"]),
            params=ParamCounts.from_dict(d["params"]),
            moe=None if d.get("moe") is None else MoEInfo.from_dict(d["moe"]),
            bytes=ByteCounts.from_dict(d["bytes"]),
        )


@dataclass(frozen=True)
class Stat:
    """Mean, min and max of a per-token quantity."""

    mean: float | None
    min: int | None
    max: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "min": self.min, "max": self.max}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stat:
        return cls(d["mean"], d["min"], d["max"])


@dataclass(frozen=True)
class StepRecord:
    """One forward call inside the tracked region."""

    phase: str  # "prefill" or "decode"
    tokens: int  # unmasked tokens in this step
    experts_touched: tuple[int, ...]  # distinct experts used by the step's tokens, per MoE layer
    active_params_per_token_mean: float | None
    params_touched: int  # shared params + union of experts this step used, x params per expert

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "tokens": self.tokens,
            "experts_touched": list(self.experts_touched),
            "active_params_per_token_mean": self.active_params_per_token_mean,
            "params_touched": self.params_touched,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepRecord:
        return cls(
            d["phase"], d["tokens"], tuple(d["experts_touched"]), d["active_params_per_token_mean"],
            d["params_touched"],
        )


@dataclass(frozen=True)
class RuntimeInfo:
    """What the tracked region measured."""

    tokens: dict[str, int]  # {"prefill": n, "decode": n}
    active_params_per_token: dict[str, Stat]  # by convention: all / exclude_input_embedding / ...
    active_params_per_token_by_phase: dict[str, Stat]  # "all" convention, by phase
    experts_per_token: Stat  # distinct experts a token used, per MoE layer
    top_k: dict[str, int | None]  # {"config", "router", "measured"}
    expert_load: tuple[tuple[int, ...], ...]  # [moe layer][expert] assignments
    params_touched: int  # shared params + union over the run of experts used
    steps: tuple[StepRecord, ...]
    unused_modules: tuple[str, ...]  # modules with parameters that never ran
    moe_layer_names: tuple[str, ...]
    forward_calls: int
    wall_s: float
    # exact integer (sum, count) behind each Stat, keyed "active_params_per_token.all",
    # "active_params_per_token_by_phase.decode", "experts_per_token": what merge_across_ranks adds up
    sums: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": dict(self.tokens),
            "active_params_per_token": self.active_params_per_token["all"].to_dict(),
            "active_params_per_token_by_convention": {
                k: v.to_dict() for k, v in self.active_params_per_token.items()
            },
            "active_params_per_token_by_phase": {
                k: v.to_dict() for k, v in self.active_params_per_token_by_phase.items()
            },
            "experts_per_token": self.experts_per_token.to_dict(),
            "top_k": dict(self.top_k),
            "expert_load": [list(r) for r in self.expert_load],
            "params_touched": self.params_touched,
            "steps": [s.to_dict() for s in self.steps],
            "unused_modules": list(self.unused_modules),
            "moe_layer_names": list(self.moe_layer_names),
            "forward_calls": self.forward_calls,
            "wall_s": self.wall_s,
            "sums": {k: list(v) for k, v in self.sums.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RuntimeInfo:
        return cls(
            tokens=dict(d["tokens"]),
            active_params_per_token={
                k: Stat.from_dict(v) for k, v in d["active_params_per_token_by_convention"].items()
            },
            active_params_per_token_by_phase={
                k: Stat.from_dict(v) for k, v in d["active_params_per_token_by_phase"].items()
            },
            experts_per_token=Stat.from_dict(d["experts_per_token"]),
            top_k=dict(d["top_k"]),
            expert_load=tuple(tuple(r) for r in d["expert_load"]),
            params_touched=d["params_touched"],
            steps=tuple(StepRecord.from_dict(s) for s in d["steps"]),
            unused_modules=tuple(d["unused_modules"]),
            moe_layer_names=tuple(d["moe_layer_names"]),
            forward_calls=d["forward_calls"],
            wall_s=d["wall_s"],
            sums={k: (v[0], v[1]) for k, v in d.get("sums", {}).items()},
        )


@dataclass(frozen=True)
class ReconcileRow:
    """Static vs measured value of one quantity, with the cause of any difference."""

    quantity: str
    static: float | int | None
    measured: float | int | None
    delta: float | int | None
    note: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReconcileRow:
        return cls(**d)


@dataclass(frozen=True)
class TrackResult:
    """Result of ``runprof.track``: static counts, what ran, and the reconciliation of the two."""

    static: CountResult
    runtime: RuntimeInfo
    reconcile: tuple[ReconcileRow, ...]
    memory: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

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

    def to_dict(self) -> dict[str, Any]:
        d = self.static.to_dict()
        d["runtime"] = self.runtime.to_dict()
        d["reconcile"] = [r.to_dict() for r in self.reconcile]
        d["memory"] = self.memory
        if self.extra:
            d["extra"] = self.extra
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrackResult:
        return cls(
            static=CountResult.from_dict(d),
            runtime=RuntimeInfo.from_dict(d["runtime"]),
            reconcile=tuple(ReconcileRow.from_dict(r) for r in d["reconcile"]),
            memory=d.get("memory"),
            extra=dict(d.get("extra", {})),
        )

    def merge_across_ranks(self, group: Any = None) -> TrackResult:
        """One global result from every rank's result: a collective that every rank of ``group`` must call
        (:func:`runprof.tracking.distributed.merge_across_ranks`). Steps and memory stay per rank.

        >>> merged = t.result.merge_across_ranks()  # doctest: +SKIP
        """
        from .tracking.distributed import merge_across_ranks

        return merge_across_ranks(self, group=group)


def result_from_dict(d: dict[str, Any]) -> CountResult | TrackResult:
    """Rebuild whichever result a saved JSON holds (``runtime`` present -> TrackResult)."""
    if d.get("schema") != SCHEMA:
        from .errors import InvalidArgumentError

        raise InvalidArgumentError(
            f"schema {d.get('schema')!r} is not {SCHEMA!r}: this file was not written by this runprof version"
        )
    return TrackResult.from_dict(d) if "runtime" in d else CountResult.from_dict(d)
