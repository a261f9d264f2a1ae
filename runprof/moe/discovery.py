"""Finding MoE layers: experts modules, their routers, the top-k each router holds.

Rules, in order (rule 6 of STYLE: metadata before heuristics):

1. an adapter registered for the experts module's class (``runprof.moe.adapters``);
2. transformers' own marker: ``@use_experts_implementation`` sets ``is_concatenated`` and
   ``_is_expert_parallel`` on every experts instance;
3. a module whose own parameters are all 3-D or more with one shared leading dimension E >= 2 (fused
   experts of a model that does not use the decorator).

The router of an experts module is searched in the MoE block (the experts module's parent): a module of a
class the model declares in ``_can_record_outputs["router_logits"]``, else a child named like a router.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from torch import nn

from .adapters import adapter_for
from .layer import MoELayer

log = logging.getLogger("runprof")

_LAYER_INDEX = re.compile(r"\.(\d+)(?:\.|$)")
_ROUTER_CHILD_NAMES = ("gate", "router", "w_gate", "switch", "moe_gate", "gating", "mlp_router")
_CONFIG_TOP_K = ("num_experts_per_tok", "moe_top_k", "top_k", "num_selected_experts", "moe_k", "top_k_experts")


def layer_index(name: str) -> int | None:
    """The first integer path component of a qualified module name (the decoder layer index)."""
    m = _LAYER_INDEX.search("." + name)
    return int(m.group(1)) if m else None


def config_top_k_fields(config: Any) -> list[tuple[Any, str, str]]:
    """``(config object, path, field)`` of each config level (top, ``text_config``) that holds a top-k."""
    found = []
    for cfg, path in ((config, "config"), (getattr(config, "text_config", None), "config.text_config")):
        if cfg is None:
            continue
        for attr in _CONFIG_TOP_K:
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                found.append((cfg, path, attr))
                break
    return found


def config_top_k(config: Any) -> int | None:
    """Top-k as the config says, from the field this architecture uses (text sub-config included)."""
    fields = config_top_k_fields(config)
    return int(getattr(fields[0][0], fields[0][2])) if fields else None


def _declared_router_classes(model: nn.Module) -> tuple[type, ...]:
    classes: list[type] = []
    for m in model.modules():
        recorders = getattr(type(m), "_can_record_outputs", None) or {}
        spec = recorders.get("router_logits") if isinstance(recorders, dict) else None
        for item in spec if isinstance(spec, (list, tuple)) else [spec]:
            cls = getattr(item, "target_class", item)
            if isinstance(cls, type) and cls not in classes:
                classes.append(cls)
    return tuple(classes)


def _is_decorated_experts(module: nn.Module) -> bool:
    """``@use_experts_implementation`` marks its instances: ``is_concatenated`` with ``_is_expert_parallel``
    (transformers >= 5.18) or ``is_transposed`` (5.17 and before)."""
    return hasattr(module, "is_concatenated") and (hasattr(module, "_is_expert_parallel")
                                                   or hasattr(module, "is_transposed"))


_CONFIG_EXPERTS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_routed_experts")


def config_num_experts(config: Any) -> int | None:
    """The routed-expert count a config declares (text sub-configs and DBRX's ffn_config included)."""
    for cfg in (config, getattr(config, "text_config", None), getattr(config, "ffn_config", None)):
        for attr in _CONFIG_EXPERTS:
            value = getattr(cfg, attr, None) if cfg is not None else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 1:
                return value
    return None


def _fused_leading_dim(module: nn.Module, expected: int | None) -> int | None:
    """E when every own parameter is >= 3-D with leading dim E, and E is the config's expert count
    (which rules out convolution weights such as ``conv1d [C, 1, K]`` in linear-attention layers)."""
    if isinstance(module, nn.modules.conv._ConvNd) or expected is None:
        return None
    params = list(module.parameters(recurse=False))
    if not params or any(p.dim() < 3 for p in params):
        return None
    dims = {int(p.shape[0]) for p in params}
    return expected if dims == {expected} else None


def _find_router(block: nn.Module, experts: nn.Module, declared: tuple[type, ...], num_experts: int) -> tuple[str | None, nn.Module | None]:
    candidates = [(n, m) for n, m in block.named_modules() if m is not block and m is not experts and n]
    for n, m in candidates:
        if declared and isinstance(m, declared):
            return n, m
    for n, m in candidates:
        if n in _ROUTER_CHILD_NAMES:
            w = getattr(m, "weight", None)
            if w is not None and w.dim() == 2 and num_experts in tuple(w.shape):
                return n, m
    for n, m in candidates:
        if "Router" in type(m).__name__ or "TopK" in type(m).__name__:
            return n, m
    return None, None


def find_moe_layers(model: nn.Module) -> list[MoELayer]:
    """Every MoE block of ``model``, in module order.

    >>> from transformers import MixtralConfig, AutoModelForCausalLM
    >>> import torch
    >>> cfg = MixtralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                     num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    >>> with torch.device("meta"):
    ...     m = AutoModelForCausalLM.from_config(cfg)
    >>> [(x.name, x.num_experts, x.top_k) for x in find_moe_layers(m)]
    [('model.layers.0.mlp', 8, 2), ('model.layers.1.mlp', 8, 2)]
    """
    declared = _declared_router_classes(model)
    config = getattr(model, "config", None)
    expected = config_num_experts(config)
    k_config = config_top_k(config)
    modules = dict(model.named_modules())
    layers: list[MoELayer] = []
    claimed: set[int] = set()
    for name, module in modules.items():
        if id(module) in claimed:
            continue
        adapter = adapter_for(module)
        if adapter is not None:
            rule = f"adapter {adapter.name}"
            num_experts = adapter.num_experts(module)
        elif _is_decorated_experts(module):
            adapter, rule = adapter_for(None), "@use_experts_implementation"
            num_experts = getattr(module, "num_experts", None) or _fused_leading_dim(module, expected) or 0
        else:
            lead = _fused_leading_dim(module, expected)
            if lead is None:
                continue
            adapter, rule, num_experts = adapter_for(None), "fused 3-D parameters", lead
        if not num_experts:
            continue
        block_name = name.rsplit(".", 1)[0] if "." in name else ""
        block = modules[block_name]
        router_rel, router = adapter.find_router(block, module, declared, num_experts, _find_router)
        claimed.update(id(m) for m in module.modules())
        layers.append(
            MoELayer(
                name=block_name,
                layer_index=layer_index(name),
                block=block,
                experts_name=name,
                experts=module,
                router_name=None if router_rel is None else f"{block_name}.{router_rel}".lstrip("."),
                router=router,
                num_experts=int(num_experts),
                params_per_expert=adapter.params_per_expert(module, int(num_experts)),
                adapter=adapter,
                rule=rule,
                config_top_k=k_config,
            )
        )
        log.debug("MoE layer %s: experts %s via %s", block_name, name, rule)
    return layers


def check_readable(model: nn.Module, layers: list[MoELayer]) -> None:
    """Raise when the config declares routed experts but no MoE layer could be read (never report 0)."""
    from ..errors import UnsupportedModelError

    n = config_num_experts(getattr(model, "config", None))
    if layers or n is None:
        return
    candidates = sorted({type(m).__name__ for m in model.modules() if "moe" in type(m).__name__.lower()
                         or "expert" in type(m).__name__.lower()})
    raise UnsupportedModelError(
        f"{type(model).__name__}: the config declares {n} experts but runprof found no MoE layer it can read "
        f"(candidate classes: {', '.join(candidates) or 'none'}); register an adapter for the experts class "
        "with runprof.moe.register_adapter"
    )
