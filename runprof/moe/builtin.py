"""Adapters for the transformers 5.x architectures whose MoE layers differ from the common pattern.

The common pattern (``experts(hidden_states, top_k_index, top_k_weights)`` with fused 3-D parameters) needs
no adapter. Each class here says what differs and how the expert ids are read without recomputing top-k.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .adapters import Adapter, Capture, register_adapter


@register_adapter
class DbrxAdapter(Adapter):
    """DBRX: experts are 2-D ``[E x I, H]`` tensors in ``experts.mlp``; top-k is taken in ``DbrxFFN``
    (the block holds ``top_k``) and passed to the experts as ``top_k_index``."""

    name = "dbrx"
    experts_classes = ("DbrxExperts",)


class _KnowsK(Adapter):
    """An adapter whose capture needs the layer's k (bound per layer when tracking starts)."""

    _k = 1

    def bind(self, layer: Any) -> Adapter:
        bound = type(self)()
        bound._k = int(self.read_top_k(layer) or 1)
        return bound


@register_adapter
class Llama4Adapter(_KnowsK):
    """Llama-4: the router returns ``(scores [T, E], logits)`` where ``scores`` is the sigmoid of the
    router's own top-k values scattered into ``-inf`` (so exactly the chosen experts are > 0); the experts
    module then runs every expert on every token, scaled by those scores. The chosen ids are the positions
    of the router's nonzero scores, read with ``topk(scores, k)``; the dense compute is a property of
    transformers' implementation, not of the routing."""

    name = "llama4"
    experts_classes = ("Llama4TextExperts",)
    capture = "router_out"

    def num_experts(self, experts: nn.Module) -> int:
        return int(experts.num_experts)

    def from_router_output(self, output: Any) -> Capture | None:
        if not (isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor)):
            return None
        weights, ids = torch.topk(output[0], self._k, dim=-1)
        return ids, weights


@register_adapter
class Gemma4Adapter(Adapter):
    """Gemma-4: the router reads ``config.top_k_experts`` at every forward, so that is the k to read and
    to set; the experts module is a sibling of the router inside the decoder layer."""

    name = "gemma4"
    experts_classes = ("Gemma4TextExperts",)

    def top_k_owners(self, layer: Any) -> list[tuple[nn.Module, str]]:
        cfg = getattr(layer.router, "config", None)
        return [(cfg, "top_k_experts")] if cfg is not None and hasattr(cfg, "top_k_experts") else []


@register_adapter
class JetMoeAdapter(_KnowsK):
    """JetMoE (MoE MLP and mixture-of-attention): the unit is ``JetMoeMoE``/``JetMoeMoA`` holding
    ``input_linear``/``output_linear`` (3-D, E first) and its own ``JetMoeTopKGating`` router, which returns
    ``(index_sorted_experts, batch_index, batch_gates, expert_size, logits)``: ``expert_size`` is a Python
    list (the router itself calls ``.tolist()``), so rebuilding the ids from it would copy it back to the
    device, one blocking host->device copy per call. The ids are instead ``logits.topk(k)``: the router's own
    decision, the same op on the very logits tensor it returns, so the same experts, computed on the device;
    k is the router's, read from the shapes (slots ÷ tokens). The weights are the router's own gates, put
    back in token order: sorted slot i is flat position ``index_sorted_experts[i]`` (= token x k + choice)."""

    name = "jetmoe"
    experts_classes = ("JetMoeMoE", "JetMoeMoA")
    capture = "router_out"
    top_k_fixed = "JetMoE's mixture-of-attention ties the query heads to k (heads = kv heads x k)"

    def num_experts(self, experts: nn.Module) -> int:
        return int(experts.input_linear.num_experts)

    def params_per_expert(self, experts: nn.Module, num_experts: int) -> int:
        return (experts.input_linear.weight.numel() + experts.output_linear.weight.numel()) // num_experts

    def find_router(self, block: nn.Module, experts: nn.Module, declared: tuple[type, ...], num_experts: int,
                    default: Callable[..., Any]) -> tuple[str | None, nn.Module | None]:
        prefix = next(n for n, m in block.named_modules() if m is experts)
        return f"{prefix}.router".lstrip("."), experts.router

    def top_k_owners(self, layer: Any) -> list[tuple[nn.Module, str]]:
        return [(layer.router, "top_k"), (layer.experts, "top_k")] if hasattr(layer.experts, "top_k") else [
            (layer.router, "top_k")]

    def from_router_output(self, output: Any) -> Capture | None:
        if not (isinstance(output, tuple) and len(output) == 5):
            return None
        index_sorted, _, gates, _, logits = output
        if not (isinstance(logits, torch.Tensor) and logits.dim() == 2 and isinstance(index_sorted, torch.Tensor)):
            return None
        n, tokens = index_sorted.numel(), logits.shape[0]
        k = n // tokens if tokens else self._k
        ids = logits.topk(k, dim=-1).indices
        weights = torch.empty(n, dtype=gates.dtype, device=gates.device).scatter_(0, index_sorted, gates)
        return ids, weights.view(-1, k)


@register_adapter
class LongcatFlashAdapter(Adapter):
    """Longcat-Flash: ``zero_expert_num`` zero-computation (identity) experts follow the E real ones; a
    token routed to one of them uses no expert parameters, so ids >= E are dropped (marked -1) and a token
    may use fewer than k parameterized experts. ``gate_up_proj`` has E + Z rows (the Z extra rows are never
    read); ``down_proj`` has E."""

    name = "longcat-flash"
    experts_classes = ("LongcatFlashExperts",)

    def num_experts(self, experts: nn.Module) -> int:
        return int(experts.num_routed_experts)

    def params_per_expert(self, experts: nn.Module, num_experts: int) -> int:
        if experts.gate_up_proj is None:
            return 0
        return experts.gate_up_proj[0].numel() + experts.down_proj[0].numel()

    def from_experts_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Capture | None:
        captured = super().from_experts_inputs(args, kwargs)
        if captured is None:
            return None
        ids, weights = captured
        return torch.where(ids < self._e, ids, -1), weights

    _e = 0

    def bind(self, layer: Any) -> Adapter:
        bound = type(self)()
        bound._e = layer.num_experts
        return bound


@register_adapter
class ZayaAdapter(Adapter):
    """Zaya: the router may pick an extra compute-free "skip" expert, which it rewrites to expert 0 with
    weight 0 before the experts module sees it; such slots are dropped (marked -1), so a token that skipped
    used no expert parameters in that layer."""

    name = "zaya"
    experts_classes = ("ZayaExperts",)

    def from_experts_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Capture | None:
        captured = super().from_experts_inputs(args, kwargs)
        if captured is None or captured[1] is None:
            return captured
        ids, weights = captured
        return torch.where(weights == 0, -1, ids), weights


@register_adapter
class DogeAdapter(Adapter):
    """Doge (CDMoE): experts are rows of ``down_embed``/``up_embed`` (``[E, H]`` each) chosen by product-key
    top-k inside the block's forward; the chosen ids reach ``down_embed(indices)`` as its input, which a
    pre-hook on ``down_embed`` reads. The block's dense ``gate/up/down_proj`` run on every token (shared)."""

    name = "doge"
    experts_classes = ("DogeCDMoE",)

    def params_per_expert(self, experts: nn.Module, num_experts: int) -> int:
        return (experts.down_embed.weight.numel() + experts.up_embed.weight.numel()) // num_experts

    def routed_parts(self, experts: nn.Module) -> list[str]:
        return ["down_embed", "up_embed"]

    def find_router(self, block: nn.Module, experts: nn.Module, declared: tuple[type, ...], num_experts: int,
                    default: Callable[..., Any]) -> tuple[str | None, nn.Module | None]:
        prefix = next(n for n, m in block.named_modules() if m is experts)
        return f"{prefix}.router_gate".lstrip("."), experts.router_gate

    def top_k_owners(self, layer: Any) -> list[tuple[nn.Module, str]]:
        return [(layer.experts, "top_k")]

    def hook_module(self, layer: Any) -> nn.Module:
        return layer.experts.down_embed

    def from_experts_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Capture | None:
        ids = args[0] if args else kwargs.get("input")
        return (ids, None) if isinstance(ids, torch.Tensor) else None
