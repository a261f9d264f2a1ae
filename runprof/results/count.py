"""Static counts of one model (``runprof.count_params``): parameters, groups, MoE layout, bytes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from .common import CONVENTIONS, Env, ModelInfo, check_header, fill_env, header, restore_env


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
    def from_dict(cls, d: Mapping[str, Any]) -> LayerPattern:
        return cls(d["name"], tuple(d["shape"]), d["count"], d["params"])


@dataclass(frozen=True)
class ParamCounts:
    """Static parameter counts (unique tensors; logical counts for packed quantized weights).

    ``lm_head_tied`` is the one answer to "is lm_head the input embedding?" (``tied`` lists every tie,
    lm_head's or not); static and measured ``exclude_input_embedding`` both read it.
    """

    total: int
    by_group: dict[str, int]
    active_per_token: dict[str, int]
    tied: tuple[tuple[str, str], ...]
    by_layer_pattern: tuple[LayerPattern, ...]
    buffers: int = 0  # numel of buffers, not part of total
    lm_head_tied: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_group": dict(self.by_group),
            "active_per_token": dict(self.active_per_token),
            "tied": [list(p) for p in self.tied],
            "lm_head_tied": self.lm_head_tied,
            "by_layer_pattern": [p.to_dict() for p in self.by_layer_pattern],
            "buffers": self.buffers,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ParamCounts:
        return cls(
            total=d["total"],
            by_group=dict(d["by_group"]),
            active_per_token={c: d["active_per_token"][c] for c in CONVENTIONS},
            tied=tuple(tuple(p) for p in d["tied"]),
            by_layer_pattern=tuple(LayerPattern.from_dict(p) for p in d["by_layer_pattern"]),
            buffers=d["buffers"],
            lm_head_tied=d["lm_head_tied"],
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
    def from_dict(cls, d: Mapping[str, Any]) -> MoELayerInfo:
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

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    @property
    def routed_params(self) -> int:
        """Σ over MoE layers of E x params per expert: everything a token may or may not use."""
        return sum(layer.num_experts * layer.params_per_expert for layer in self.layers)

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
    def from_dict(cls, d: Mapping[str, Any]) -> MoEInfo:
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
    # a quantization the config declares: {"method", "applied" (bytes counted as stored), "quantized_params"}
    quantization: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_dtype": dict(self.by_dtype), "buffers": self.buffers,
                "quantization": None if self.quantization is None else dict(self.quantization)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ByteCounts:
        return cls(d["total"], dict(d["by_dtype"]), d["buffers"], d.get("quantization"))


@dataclass(frozen=True)
class CountResult:
    """Static counts of one model: ``runprof.count_params`` returns it."""

    model: ModelInfo
    params: ParamCounts
    moe: MoEInfo | None
    bytes: ByteCounts
    env: Env | None = field(default=None, compare=False)  # versions, device, time: filled when made

    KIND = "count"

    def __post_init__(self) -> None:
        fill_env(self, self.model.device)

    def to_dict(self) -> dict[str, Any]:
        return {
            **header(self.KIND, self.env),
            "model": self.model.to_dict(),
            "params": self.params.to_dict(),
            "moe": None if self.moe is None else self.moe.to_dict(),
            "bytes": self.bytes.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, kind: str = KIND) -> CountResult:
        check_header(d, kind)
        return restore_env(cls(
            model=ModelInfo.from_dict(d["model"]),
            params=ParamCounts.from_dict(d["params"]),
            moe=None if d.get("moe") is None else MoEInfo.from_dict(d["moe"]),
            bytes=ByteCounts.from_dict(d["bytes"]),
        ), d)


class _LayerLike(Protocol):
    num_experts: int
    params_per_expert: int

    @property
    def top_k(self) -> int | None: ...


def active_per_token(total: int, by_group: Mapping[str, int], layers: Sequence[_LayerLike], lm_head_tied: bool,
                     top_ks: Sequence[int | None] | None = None) -> dict[str, int]:
    """Active params per token under each convention, with each layer's k (the router's unless given).

    ``all`` = total − Σ_layers (E − k) × params per expert; ``exclude_input_embedding`` drops the input
    embedding (kept when lm_head is tied to it, since lm_head still uses it); ``exclude_embeddings`` drops
    both embeddings and lm_head.

    >>> active_per_token(100, {"embeddings": 10, "lm_head": 10}, [], lm_head_tied=False)
    {'all': 100, 'exclude_input_embedding': 90, 'exclude_embeddings': 80}
    """
    ks = top_ks if top_ks is not None else [x.top_k for x in layers]
    inactive = 0
    for layer, k in zip(layers, ks):
        k = layer.num_experts if k is None else k
        inactive += max(layer.num_experts - k, 0) * layer.params_per_expert
    all_ = total - inactive
    return {
        "all": all_,
        "exclude_input_embedding": all_ - convention_offset("exclude_input_embedding", by_group, lm_head_tied),
        "exclude_embeddings": all_ - convention_offset("exclude_embeddings", by_group, lm_head_tied),
    }


def convention_offset(convention: str, by_group: Mapping[str, int], lm_head_tied: bool) -> int:
    """Params a convention leaves out of ``all`` (the same for every token)."""
    if convention == "exclude_input_embedding":
        return 0 if lm_head_tied else by_group["embeddings"]
    if convention == "exclude_embeddings":
        return by_group["embeddings"] + by_group["lm_head"]
    return 0


__all__ = ["ByteCounts", "CountResult", "LayerPattern", "MoEInfo", "MoELayerInfo", "ParamCounts",
           "active_per_token", "convention_offset"]
