"""A live MoE block of a model, and the size of one routed expert (a leaf of ``runprof.moe``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from ..tensors import logical_numel

if TYPE_CHECKING:
    from .adapters import Adapter


@dataclass
class MoELayer:
    """A live MoE block of a model (holds module references; not a result)."""

    name: str  # the block's qualified name, e.g. "model.layers.3.mlp"
    layer_index: int | None
    block: nn.Module
    experts_name: str
    experts: nn.Module
    router_name: str | None
    router: nn.Module | None
    num_experts: int
    params_per_expert: int
    adapter: Adapter
    rule: str
    config_top_k: int | None = None

    @property
    def top_k(self) -> int | None:
        """Top-k as the objects hold it now (router, then block, then experts)."""
        return self.adapter.read_top_k(self)


def experts_size(experts: nn.Module, num_experts: int) -> int:
    """Params of one routed expert: Σ numel of the experts module's tensors ÷ E (biases included)."""
    return sum(logical_numel(p) for p in experts.parameters()) // num_experts
