"""Per-architecture adapters: how to read an MoE layer's routing and top-k.

The default adapter serves every architecture whose experts module is called as
``experts(hidden_states, top_k_index, top_k_weights)``: a forward pre-hook on the experts module sees the
expert ids each token really used. Architectures that differ register an :class:`Adapter` subclass for
their experts class name with :func:`register_adapter`; a duplicate registration is refused.

>>> class MyAdapter(Adapter):
...     name = "my-model"
...     experts_classes = ("MyExperts",)
>>> _ = register_adapter(MyAdapter)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from ..errors import InvalidArgumentError, UnsupportedModelError
from .layer import experts_size

if TYPE_CHECKING:
    from .layer import MoELayer

_TOP_K_ATTRS = ("top_k", "num_experts_per_tok", "topk", "moe_top_k", "num_selected_experts", "top_k_experts", "k")

Capture = tuple[torch.Tensor, "torch.Tensor | None"]
"""(expert ids [T, k], routing weights [T, k] or None) for the T tokens of one call."""


class Adapter:
    """How runprof reads one family of MoE layers. Subclass and override what differs.

    ``capture`` is ``"experts_pre"`` (read the experts module's inputs) or ``"router_out"`` (read the
    router's output). Whatever the source, the ids must be the ones the model used; never recompute
    top-k from logits (DeepSeek-style routers add biases and group limits).
    """

    name = "default"
    experts_classes: tuple[str, ...] = ()
    capture = "experts_pre"
    top_k_fixed: str | None = None  # why set_top_k must refuse, when k is hard-wired

    # --- discovery -------------------------------------------------------------------------------
    def num_experts(self, experts: nn.Module) -> int:
        n = getattr(experts, "num_experts", None)
        if isinstance(n, int) and n > 0:
            return n
        first = next(iter(experts.parameters(recurse=False)), None)
        if first is None or first.dim() < 3:
            raise UnsupportedModelError(f"cannot tell how many experts {type(experts).__name__} holds")
        return int(first.shape[0])

    def params_per_expert(self, experts: nn.Module, num_experts: int) -> int:
        return experts_size(experts, num_experts)

    def find_router(
        self,
        block: nn.Module,
        experts: nn.Module,
        declared: tuple[type, ...],
        num_experts: int,
        default: Callable[..., tuple[str | None, nn.Module | None]],
    ) -> tuple[str | None, nn.Module | None]:
        return default(block, experts, declared, num_experts)

    # --- top-k -----------------------------------------------------------------------------------
    def top_k_owners(self, layer: MoELayer) -> list[tuple[nn.Module, str]]:
        """(object, attribute) pairs that hold this layer's k, the one read at forward first."""
        owners: list[tuple[nn.Module, str]] = []
        for obj in (layer.router, layer.block, layer.experts):
            if obj is None:
                continue
            for attr in _TOP_K_ATTRS:
                value = getattr(obj, attr, None)
                if isinstance(value, int) and not isinstance(value, bool):
                    owners.append((obj, attr))
                    break
        return owners

    def read_top_k(self, layer: MoELayer) -> int | None:
        """k from the object the forward reads; the config's k when no object holds one."""
        owners = self.top_k_owners(layer)
        return int(getattr(*owners[0])) if owners else layer.config_top_k

    def bind(self, layer: MoELayer) -> Adapter:
        """An adapter instance for one layer (adapters that need per-layer state return a copy)."""
        return self

    def top_k_targets(self, layer: MoELayer) -> list[tuple[Any, str, str]]:
        """``(object, attribute, dotted path)`` of every place this layer's k must be written so the forward
        reads it; refuses (``InvalidArgumentError``) an architecture that hard-wires k or holds it nowhere.
        ``set_top_k`` asks every layer first and writes only when all can be changed."""
        if self.top_k_fixed:
            raise InvalidArgumentError(f"{type(layer.experts).__name__}: top-k cannot be changed: {self.top_k_fixed}")
        owners = self.top_k_owners(layer)
        if not owners:
            raise InvalidArgumentError(
                f"{layer.name}: no top-k attribute found on {type(layer.router).__name__} or "
                f"{type(layer.block).__name__}; register an adapter (runprof.moe.register_adapter) that knows it"
            )
        targets = []
        for obj, attr in owners:
            path = (layer.router_name if obj is layer.router else layer.experts_name if obj is layer.experts
                    else layer.name if obj is layer.block else f"{layer.router_name}.config")
            targets.append((obj, attr, f"{path}.{attr}"))
        return targets

    def routed_parts(self, experts: nn.Module) -> list[str]:
        """Submodules (relative names) holding the routed experts' parameters; ``""`` is the whole
        experts module. When these are parts, the experts module itself is the MoE block and its other
        parameters are shared (always-active) experts."""
        return [""]

    def hook_module(self, layer: MoELayer) -> nn.Module:
        """The module whose forward pre-hook sees the expert ids (``capture == "experts_pre"``)."""
        return layer.experts

    # --- capture ---------------------------------------------------------------------------------
    def from_experts_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Capture | None:
        """Expert ids and weights from ``experts(hidden_states, top_k_index, top_k_weights)``."""
        idx = kwargs.get("top_k_index", args[1] if len(args) > 1 else None)
        w = kwargs.get("top_k_weights", args[2] if len(args) > 2 else None)
        if not isinstance(idx, torch.Tensor):
            return None
        return idx, w if isinstance(w, torch.Tensor) else None

    def from_router_output(self, output: Any) -> Capture | None:
        """Expert ids and weights from a router returning ``(logits, weights, indices)``."""
        if isinstance(output, tuple) and len(output) >= 3:
            w, idx = output[1], output[2]
            if isinstance(idx, torch.Tensor) and not idx.is_floating_point():
                return idx, w if isinstance(w, torch.Tensor) else None
        return None


_REGISTRY: dict[str, Adapter] = {}
_DEFAULT = Adapter()


def register_adapter(adapter_cls: type[Adapter]) -> type[Adapter]:
    """Register an adapter for the experts classes it names (usable as a class decorator).

    A class name already taken by another adapter is refused (raises ``InvalidArgumentError``).
    """
    adapter = adapter_cls()
    if not adapter.experts_classes:
        raise InvalidArgumentError(f"adapter {adapter_cls.__name__} names no experts_classes")
    for cls_name in adapter.experts_classes:
        if cls_name in _REGISTRY and type(_REGISTRY[cls_name]) is not adapter_cls:
            raise InvalidArgumentError(
                f"experts class {cls_name!r} already has adapter {_REGISTRY[cls_name].name!r}; "
                "unregister_adapter() it first"
            )
    for cls_name in adapter.experts_classes:
        _REGISTRY[cls_name] = adapter
    return adapter_cls


def unregister_adapter(adapter_cls: type[Adapter]) -> None:
    """Remove every registration made by ``adapter_cls``."""
    for key in [k for k, v in _REGISTRY.items() if type(v) is adapter_cls]:
        del _REGISTRY[key]


def adapter_for(module: nn.Module | None) -> Adapter | None:
    """The adapter registered for ``module``'s class; with ``None``, the default adapter."""
    if module is None:
        return _DEFAULT
    return _REGISTRY.get(type(module).__name__)
