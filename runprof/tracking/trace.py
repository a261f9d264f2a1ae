"""The routing trace of a tracked run, on the CPU: frozen per-step and per-layer records.

``t.trace`` after ``with runprof.track(model) as t`` is a :class:`RoutingTrace`; ``runprof.routing``
computes its statistics from it. The collectors' own records (device tensors, appended to in the hooks) are
private to :mod:`runprof.tracking.collectors` and become these types once, after the hooks are off.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepTrace:
    """Forward call ``i`` of the tracked model: phase (``prefill``/``decode``), shape, and the bool mask of
    real (unpadded) tokens over its ``batch x seq`` rows, or None when every row is real."""

    phase: str
    batch: int
    seq: int
    mask: torch.Tensor | None


@dataclass(frozen=True)
class LayerTrace:
    """One MoE layer's routed rows: ``ids [N, k]`` (int64, -1 = no expert), ``weights [N, k]`` (float32; the trace keeps
    the routers' own dtype, 2 bytes for a bf16 or fp16 router) or None,
    ``step [N]`` (the forward call of each row), ``position [N]`` (row inside its step: ``b * seq + t``) and
    ``real [N]`` (False for padding)."""

    name: str
    num_experts: int
    params_per_expert: int
    ids: torch.Tensor
    weights: torch.Tensor | None
    step: torch.Tensor
    position: torch.Tensor
    real: torch.Tensor

    @property
    def top_k(self) -> int:
        return int(self.ids.shape[1])


@dataclass(frozen=True)
class RoutingTrace:
    """Routing captured in one tracked run: the steps, and for each MoE layer its routed rows."""

    layer_names: tuple[str, ...]
    steps: tuple[StepTrace, ...]
    layers: tuple[LayerTrace, ...]


def usage(layer: LayerTrace) -> torch.Tensor:
    """Bool ``[N, E]``: which experts each routed row used (ids < 0 are padding of k).

    >>> t = LayerTrace("l", 3, 1, torch.tensor([[0, 2], [1, -1]]), None, torch.zeros(2, dtype=torch.long),
    ...                torch.arange(2), torch.ones(2, dtype=torch.bool))
    >>> usage(t).int().tolist()
    [[1, 0, 1], [0, 1, 0]]
    """
    used = torch.zeros(layer.ids.shape[0], layer.num_experts + 1, dtype=torch.bool)
    ids = torch.where(layer.ids < 0, layer.num_experts, layer.ids)
    used.scatter_(1, ids, True)
    return used[:, : layer.num_experts]


__all__ = ["LayerTrace", "RoutingTrace", "StepTrace", "usage"]
