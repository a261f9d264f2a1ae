"""What each module of a model costs per row it processes, read once per model from its structure (shapes
only: it works on the meta device and never runs the model).

- every linear weight (``nn.Linear`` and any module with ``in_features``/``out_features``): 2 × in × out per row
  of its input; the output embedding only on the rows whose logits are computed; MLA's ``kv_b_proj`` on every
  key position (transformers caches the latent and expands it at each call);
- routers without an ``nn.Linear`` (a ``weight [E, H]`` used with ``F.linear``): 2 × numel per row;
- routed experts: per (row, expert) assignment, 2 × the per-expert numel of every weight *matrix* of the experts
  module (``[E, out, in]`` slices, or ``[E·I, H]`` row blocks as DBRX stores them; ``[E, d]`` biases are adds, not
  matmuls; rows of an ``nn.Embedding`` are 1 × d matrices); whatever an architecture's experts do, the FLOPs come
  from their weight shapes. Llama-4 computes every expert on every row (``dense``);
- the attention core: :mod:`runprof.flops.attention`;
- embeddings and norms: no matmul. Anything else that holds a weight matrix or a convolution (linear-attention
  and SSM recurrences, short convolutions, hyper-connections) is listed as *not covered*, by module name.

Only the decoder (``get_decoder()``) and the output embedding are counted: a vision or audio tower does not
process text rows. Modules that never ran in a tracked region are left out at ``stop()``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..moe.layer import MoELayer
from ..static.groups import group_parameters
from ..tensors import logical_numel, tensor_bytes
from .attention import AttentionCore, attention_core, is_softmax_attention, layer_types

_DENSE_ADAPTERS = frozenset({"llama4"})  # adapters whose experts module computes every expert on every row
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MIXER = re.compile(r"Attention|Attn|MLA|Mamba|Mixer|DeltaNet|SSM|ShortConv|Lightning|Conv", re.IGNORECASE)


@dataclass(frozen=True)
class Weight:
    """A linear weight: the FLOPs of one row through it, and which rows it sees."""

    name: str  # the module's qualified name
    group: str  # FLOP group (the parameter group of its weight)
    flops_per_row: int
    rows: str = "rows"  # "rows": every row of the call; "logits": rows whose logits are computed; "keys"
    core: int | None = None  # for rows == "keys": the index of the attention core whose keys it expands


@dataclass(frozen=True)
class ExpertsCost:
    """One MoE layer's routed experts."""

    name: str  # the MoE block's name
    flops_per_assignment: int  # one row through one expert
    num_experts: int
    bytes_per_expert: int
    dense: bool = False  # every row computes every expert


@dataclass(frozen=True)
class ModelFlops:
    """A model's FLOPs per row, per assignment and per attention pair, and the bytes a step reads."""

    weights: tuple[Weight, ...]
    experts: tuple[ExpertsCost, ...]  # in MoE-layer order
    cores: tuple[AttentionCore, ...]
    not_covered: tuple[str, ...]
    shared_weight_bytes: int  # parameters every step reads: all but routed experts and an untied input embedding


def _matrix_like(p: Any) -> bool:
    """A weight that multiplies (≥ 2 dims larger than 1): not a bias, a scale or a [1, E] correction."""
    return sum(1 for d in p.shape if d > 1) >= 2


def _under(name: str, prefixes: set[str]) -> bool:
    return any(name == x or name.startswith(x + ".") for x in prefixes)


def _routed_owners(layer: MoELayer) -> list[nn.Module]:
    """The modules holding the routed experts' parameters (a router inside the experts module excluded)."""
    router = layer.router
    skip = set() if router is None else {id(m) for m in router.modules()}
    out = []
    for part in layer.adapter.routed_parts(layer.experts):
        module = layer.experts.get_submodule(part) if part else layer.experts
        out += [m for m in module.modules() if id(m) not in skip]
    return out


def _routed_params(layer: MoELayer) -> list[Any]:
    return [p for owner in _routed_owners(layer) for p in owner.parameters(recurse=False)]


def _experts_cost(layer: MoELayer) -> ExpertsCost:
    e = layer.num_experts
    flops = nbytes = 0
    for owner in _routed_owners(layer):
        for p in owner.parameters(recurse=False):
            nbytes += tensor_bytes(p)
            numel = logical_numel(p)
            if p.dim() >= 3:
                flops += 2 * numel // int(p.shape[0])
            elif p.dim() == 2 and (int(p.shape[0]) != e or isinstance(owner, nn.Embedding)):
                flops += 2 * numel // e
    return ExpertsCost(layer.name, flops, e, nbytes // e, dense=layer.adapter.name in _DENSE_ADAPTERS)


def _decoder_prefix(model: nn.Module) -> str | None:
    """The decoder's qualified name ("" for the whole model), or None when the model names none."""
    try:
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    except Exception:  # noqa: BLE001 - transformers raises for models without a findable decoder
        decoder = None
    if not isinstance(decoder, nn.Module):
        return None
    return next((n for n, m in model.named_modules() if m is decoder), None)


def _linear_flops(module: nn.Module) -> int | None:
    i, o = getattr(module, "in_features", None), getattr(module, "out_features", None)
    if isinstance(i, int) and isinstance(o, int):
        w = getattr(module, "weight", None)
        return 2 * (logical_numel(w) if isinstance(w, nn.Parameter) and w.dim() == 2 else i * o)
    return None


class _Walk:
    """One pass over the decoder's modules, sorting each into weights, experts, cores and not covered."""

    def __init__(self, model: nn.Module, layers: list[MoELayer]) -> None:
        self.model, self.layers = model, layers
        groups, self.unique, _ = group_parameters(model, layers)
        self.groups = groups
        self.param_names = {id(p): n for n, p in self.unique}
        self.routers = {x.router_name for x in layers if x.router_name is not None}
        self.routed = {f"{x.experts_name}.{part}".rstrip(".") for x in layers
                       for part in x.adapter.routed_parts(x.experts)}
        self.types = layer_types(getattr(model, "config", None))
        self.weights: list[Weight] = []
        self.cores: list[AttentionCore] = []
        self.not_covered: list[str] = []

    def group_of(self, module: nn.Module, default: str = "other") -> str:
        p = next((p for p in module.parameters(recurse=False)), None)
        return self.groups.get(self.param_names.get(id(p), ""), default) if p is not None else default

    def visit(self, name: str, module: nn.Module) -> None:
        if is_softmax_attention(module):
            core = attention_core(name, module, self.types)
            if core is None:
                self.not_covered.append(name)
            else:
                self.cores.append(core)
        elif isinstance(getattr(module, "layer_idx", None), int) and _MIXER.search(type(module).__name__) and \
                not any(is_softmax_attention(m) for m in module.modules()):
            self.not_covered.append(name)  # a sequence mixer with its own recurrence (linear attention, SSM)
        flops = _linear_flops(module)
        if flops is not None:
            self.weights.append(self._weight(name, module, flops))
        elif isinstance(module, nn.Embedding) or not any(True for _ in module.parameters(recurse=False)):
            return
        elif name in self.routers:
            matrix = sum(logical_numel(p) for p in module.parameters(recurse=False) if _matrix_like(p))
            self.weights.append(Weight(name, "routers", 2 * matrix))
        elif any(_matrix_like(p) for p in module.parameters(recurse=False)) or isinstance(module, _CONV):
            self.not_covered.append(name)

    def _weight(self, name: str, module: nn.Module, flops: int) -> Weight:
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        if name.endswith("kv_b_proj") and self.cores and self.cores[-1].name == parent and self.cores[-1].latent:
            return Weight(name, self.group_of(module, "attention"), flops, "keys", len(self.cores) - 1)
        return Weight(name, "routers" if name in self.routers else self.group_of(module), flops)


def analyze(model: nn.Module, layers: list[MoELayer]) -> ModelFlops:
    """The FLOPs structure of ``model`` (any device, meta included) with its MoE ``layers``.

    >>> from transformers import LlamaConfig, AutoModelForCausalLM
    >>> import torch
    >>> with torch.device("meta"):
    ...     m = AutoModelForCausalLM.from_config(LlamaConfig(hidden_size=64, intermediate_size=128,
    ...         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=100))
    >>> f = analyze(m, [])
    >>> sum(w.flops_per_row for w in f.weights if w.rows == "rows")  # 2 layers x 2 x (q, o 2 x 4096 + k, v 2 x 2048 + mlp 3 x 8192)
    147456
    >>> f.cores[0].flops_per_pair, f.cores[0].kv_bytes_per_position  # 2 x 4 heads x (16 + 16); (32 + 32) x 4 B
    (256, 256)
    """
    walk = _Walk(model, layers)
    prefix = _decoder_prefix(model)
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    in_emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    skip: str | None = None
    counted: set[int] = set()
    for name, module in model.named_modules():
        if module is out_emb:
            flops = _linear_flops(module)
            if flops is not None:
                walk.weights.append(Weight(name, "lm_head", flops, "logits"))
            counted.update(id(p) for p in module.parameters())
            continue
        if skip is not None and (name == skip or name.startswith(skip + ".")) and not _under(name, walk.routers):
            continue
        skip = None
        if prefix and name != prefix and not name.startswith(prefix + "."):
            continue
        if name in walk.routed:
            skip = name  # the routed experts: counted per assignment, not per row
            continue
        counted.update(id(p) for p in module.parameters(recurse=False))
        walk.visit(name, module)
    routed_ids = {id(p) for x in layers for p in _routed_params(x)}
    tied = in_emb is not None and out_emb is not None and any(
        p is q for p in in_emb.parameters() for q in out_emb.parameters())
    untied_input = set() if tied or in_emb is None else {id(p) for p in in_emb.parameters()}
    shared = sum(tensor_bytes(p) for _, p in walk.unique
                 if id(p) in counted and id(p) not in routed_ids and id(p) not in untied_input)
    return ModelFlops(tuple(walk.weights), tuple(_experts_cost(x) for x in layers), tuple(walk.cores),
                      tuple(dict.fromkeys(walk.not_covered)), shared)


__all__ = ["ExpertsCost", "ModelFlops", "Weight", "analyze"]
