"""What ``track()`` learns about a model before it can install its hooks — the MoE layers, the static counts,
the parameter bytes per device, which modules hold parameters — kept per model while the model is unchanged.

A second ``track()`` (or a :func:`runprof.watch` record) of the same model then starts with one walk over the
parameters, to check that nothing changed: names, shapes, dtypes and devices, each layer's router k and the
config's k. The cache holds models weakly (an entry goes with its model) and never writes to the model.
"""
from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..flops import ModelFlops, analyze
from ..moe.discovery import check_readable, config_top_k, find_moe_layers
from ..moe.layer import MoELayer
from ..results import CountResult
from ..static import count_model

log = logging.getLogger("runprof")


@dataclass
class ModelFacts:
    modules: list[tuple[str, nn.Module, tuple]]  # (name, module, its children) in named_modules order
    signature: tuple
    top_ks: tuple
    layers: list[MoELayer]
    static: CountResult
    resident: dict[str, tuple[int, int]]  # parameter and buffer bytes per device (the memory ledger's)
    with_params: list[tuple[str, nn.Module]]  # modules that hold parameters (the module collector's)
    placement: dict[str, int] | None
    flops: ModelFlops | None = None  # FLOPs per row / assignment / attention pair (None: the analysis failed)


_FACTS: weakref.WeakKeyDictionary[nn.Module, ModelFacts] = weakref.WeakKeyDictionary()


def signature(model: nn.Module) -> tuple:
    """Every parameter's name, shape, dtype and device (what the static counts and placement depend on)."""
    return tuple((n, p.shape, p.dtype, p.device) for n, p in model.named_parameters())


def module_list(model: nn.Module) -> list[tuple[str, nn.Module, tuple]]:
    return [(n, m, tuple(m._modules.values())) for n, m in model.named_modules()]


def fast_signature(modules: list[tuple[str, nn.Module, tuple]]) -> tuple | None:
    """:func:`signature` from a known module list, without walking the tree again: None when a module's
    children changed (a submodule replaced), so the tree must be walked. Tied parameters appear once."""
    seen: set[int] = set()
    out = []
    for name, module, children in modules:
        now = tuple(module._modules.values())
        if len(now) != len(children) or any(a is not b for a, b in zip(now, children)):
            return None
        for key, p in module._parameters.items():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                out.append((f"{name}.{key}" if name else key, p.shape, p.dtype, p.device))
    return tuple(out)


def compiled_forward(modules: list[tuple[str, nn.Module, tuple]]) -> bool:
    """True when a module's forward was replaced by a ``torch.compile``'d function."""
    return any(hasattr(m.__dict__.get("forward"), "_torchdynamo_orig_callable") for _, m, _ in modules)


def _top_ks(model: nn.Module, layers: list[MoELayer]) -> tuple:
    return tuple(layer.top_k for layer in layers) + (config_top_k(getattr(model, "config", None)),)


def facts(model: nn.Module, name: str) -> ModelFacts:
    """The model's facts, from the cache when the model has not changed since they were found."""
    cached = _FACTS.get(model)
    if cached is not None and cached.static.model.name == name and fast_signature(cached.modules) == \
            cached.signature and cached.top_ks == _top_ks(model, cached.layers):
        return cached
    from ..memory.ledger import bytes_by_device
    from .distributed import placement

    layers = find_moe_layers(model)
    check_readable(model, layers)
    modules = module_list(model)
    found = ModelFacts(
        modules=modules, signature=fast_signature(modules), top_ks=_top_ks(model, layers), layers=layers, static=count_model(model, layers, name=name),
        resident=bytes_by_device(model),
        with_params=[(n, m) for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))],
        placement=placement(model), flops=_flops(model, layers))
    _FACTS[model] = found
    return found


def _flops(model: nn.Module, layers: list[MoELayer]) -> ModelFlops | None:
    try:
        return analyze(model, layers)
    except Exception as e:  # noqa: BLE001 - an unreadable structure costs the FLOPs figures, never the run
        log.warning("runprof: FLOPs of %s not counted (%s: %s)", type(model).__name__, type(e).__name__, e)
        return None


def forget(model: Any) -> None:
    """Drop a model's cached facts (the next track() finds them again)."""
    _FACTS.pop(model, None)


__all__ = ["ModelFacts", "compiled_forward", "facts", "fast_signature", "forget", "signature"]
