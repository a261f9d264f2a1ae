"""Assigning every unique parameter to one group, and folding layer indices.

A parameter's group comes from the modules that hold it, by precedence: the input embedding and the output
embedding (by tensor identity with ``get_input_embeddings()``/``get_output_embeddings()``), a norm owning
it, a router above it, an experts module above it (routed experts), the MoE block above it (shared experts
and their gates), an attention or other sequence-mixing module above it, an MLP above it (dense MLP);
everything else is ``other``.
"""
from __future__ import annotations

import re
from collections import defaultdict

import torch
from torch import nn

from ..moe.layer import MoELayer
from ..results import LayerPattern
from ..tensors import logical_numel

_NORM = re.compile(r"Norm")
_ATTENTION = re.compile(r"Attention|Attn|MLA$|Mamba|Mixer|DeltaNet|LinearAttention|SSM|ShortConv", re.IGNORECASE)
_MLP = re.compile(r"MLP|FeedForward|FFN|Mlp|DenseActDense")
_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)")


def fold_name(name: str) -> str:
    """``model.layers.17.mlp.experts.gate_up_proj`` -> ``model.layers.n.mlp.experts.gate_up_proj``."""
    return _INDEX.sub("n", name)


def _module_roles(model: nn.Module, moe_layers: list[MoELayer]) -> dict[str, str]:
    roles: dict[str, str] = {}
    for layer in moe_layers:
        # the experts' parent is a MoE block, unless it is the decoder layer or the attention itself
        # (Gemma-4 and JetMoE put experts there): then nothing beside the experts is a shared expert
        if not any(_ATTENTION.search(type(m).__name__) for m in layer.block.modules()):
            roles[layer.name] = "moe_block"
        parts = layer.adapter.routed_parts(layer.experts)
        if parts != [""]:
            roles[layer.experts_name] = "moe_block"
        for part in parts:
            roles[f"{layer.experts_name}.{part}".rstrip(".")] = "experts"
        if layer.router_name is not None:
            roles[layer.router_name] = "router"
    for name, module in model.named_modules():
        if name in roles:
            continue
        cls = type(module).__name__
        if _NORM.search(cls) or isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            roles[name] = "norm"
        elif _ATTENTION.search(cls):
            roles[name] = "attention"
        elif _MLP.search(cls):
            roles[name] = "mlp"
    return roles


_PRECEDENCE = ("router", "experts", "moe_block", "attention", "mlp")
_ROLE_GROUP = {
    "router": "routers",
    "experts": "routed_experts",
    "moe_block": "shared_experts",
    "attention": "attention",
    "mlp": "dense_mlp",
}


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")[:-1]
    return [".".join(parts[:i]) for i in range(len(parts), -1, -1)]


def group_parameters(
    model: nn.Module, moe_layers: list[MoELayer]
) -> tuple[dict[str, str], list[tuple[str, torch.Tensor]], list[tuple[str, str]]]:
    """Map each unique parameter name to its group.

    Returns ``(group_of_name, unique_params, tied_pairs)``; ``tied_pairs`` lists (kept name, dropped
    name) for every tensor reachable under two names.
    """
    roles = _module_roles(model, moe_layers)
    all_named = list(model.named_parameters(remove_duplicate=False))
    first_name: dict[int, str] = {}
    unique: list[tuple[str, torch.Tensor]] = []
    tied: list[tuple[str, str]] = []
    for name, p in all_named:
        if id(p) in first_name:
            tied.append((first_name[id(p)], name))
        else:
            first_name[id(p)] = name
            unique.append((name, p))

    special: dict[int, str] = {}
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    in_emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    for module, group in ((out_emb, "lm_head"), (in_emb, "embeddings")):  # input wins when tied
        if isinstance(module, nn.Module):
            for p in module.parameters():
                special[id(p)] = group

    groups: dict[str, str] = {}
    for name, p in unique:
        if id(p) in special:
            groups[name] = special[id(p)]
            continue
        ancestors = _ancestors(name)
        if roles.get(ancestors[0]) == "norm":
            groups[name] = "norms"
            continue
        found = {roles[a] for a in ancestors if a in roles}
        groups[name] = next((_ROLE_GROUP[r] for r in _PRECEDENCE if r in found), "other")
    return groups, unique, tied


def fold_layers(unique: list[tuple[str, torch.Tensor]]) -> tuple[LayerPattern, ...]:
    """The layer-folded table: one row per (folded name, shape), in first-seen order."""
    rows: dict[tuple[str, tuple[int, ...]], list[int]] = defaultdict(lambda: [0, 0])
    for name, p in unique:
        key = (fold_name(name), tuple(int(s) for s in p.shape))
        rows[key][0] += 1
        rows[key][1] += logical_numel(p)
    return tuple(LayerPattern(n, shape, c, params) for (n, shape), (c, params) in rows.items())
