"""Collectors: the hook bodies. They append references to device tensors and Python ints, nothing more.

Rules (DESIGN "Cheap"): O(1) Python per call, no host sync (no ``.item()``, ``.tolist()``, ``.cpu()``,
no boolean-mask indexing, no printing a tensor), data stays on the model's device until ``stop()``, when
:func:`to_trace` turns it into the frozen :class:`~runprof.tracking.trace.RoutingTrace`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..moe.layer import MoELayer
from .trace import LayerTrace, RoutingTrace, StepTrace

log = logging.getLogger("runprof")


@dataclass
class _Step:
    """One forward call as the hook saw it; ``mask`` stays on the model's device until ``stop()``."""

    phase: str
    batch: int
    seq: int
    mask: torch.Tensor | None  # bool [batch * seq], True for real (unpadded) tokens; None = all real


class StepCollector:
    """Forward pre-hook on the tracked model: one step per call.

    A call that passes a cache object runprof has not seen yet is a prefill; later calls with the same
    cache object are decode steps. A call without a cache is a prefill, and when it may create its own
    cache (``use_cache`` not False), the next call's new cache object continues it (decode).
    """

    def __init__(self) -> None:
        self.steps: list[_Step] = []
        self._caches: set[int] = set()
        self._fresh = False

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(ids, torch.Tensor):
            ids = kwargs.get("inputs_embeds")
        if not isinstance(ids, torch.Tensor) or ids.dim() < 2:
            batch, seq = (1, int(ids.shape[0])) if isinstance(ids, torch.Tensor) else (0, 0)
        else:
            batch, seq = int(ids.shape[0]), int(ids.shape[1])
        cache = kwargs.get("past_key_values", kwargs.get("cache"))  # renamed "cache" in transformers 5.24
        if cache is None:
            # the model may create its cache inside this call: the next unseen cache continues this sequence
            phase, self._fresh = "prefill", kwargs.get("use_cache") is not False
        else:
            phase = "decode" if id(cache) in self._caches or self._fresh else "prefill"
            self._caches.add(id(cache))
            self._fresh = False
        mask = kwargs.get("attention_mask")
        flat = None
        if isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[0] == batch and mask.shape[1] >= seq:
            flat = mask[:, mask.shape[1] - seq :].reshape(-1).bool()
        self.steps.append(_Step(phase, batch, seq, flat))

    @property
    def current(self) -> int:
        """Index of the step in progress; a routing call seen before any step (a submodule called
        directly) opens an implicit prefill step."""
        if not self.steps:
            self.steps.append(_Step("prefill", 0, 0, None))
        return len(self.steps) - 1


@dataclass
class _Capture:
    """Routing captured for one MoE layer: per call, the step index, expert ids and weights (on device)."""

    layer: MoELayer
    steps: list[int] = field(default_factory=list)
    ids: list[torch.Tensor] = field(default_factory=list)
    weights: list[torch.Tensor | None] = field(default_factory=list)


class RoutingCollector:
    """Captures the expert ids each token used in one MoE layer, from the layer's adapter.

    Installed as a forward pre-hook on the experts module (``capture == "experts_pre"``) or a forward hook
    on the router (``"router_out"``). Ids are narrowed to int16 on the device (E < 32768) so long runs keep
    little memory; nothing is read back until ``stop()``.
    """

    def __init__(self, layer: MoELayer, steps: StepCollector) -> None:
        self.capture = _Capture(layer)
        self._steps = steps
        self._adapter = layer.adapter.bind(layer)
        self._narrow = torch.int16 if layer.num_experts < 2**15 else torch.int32

    def _record(self, captured: tuple[torch.Tensor, torch.Tensor | None] | None) -> None:
        if captured is None:
            return
        ids, weights = captured
        c = self.capture
        c.steps.append(self._steps.current)
        # integer ids never require grad (no detach); one dtype-narrowing copy is the only device op
        c.ids.append((ids if ids.dim() == 2 else ids.reshape(-1, ids.shape[-1])).to(self._narrow))
        if weights is not None:
            weights = weights.detach()
            weights = weights if weights.dim() == 2 else weights.reshape(-1, weights.shape[-1])
        c.weights.append(weights)

    def pre_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._record(self._adapter.from_experts_inputs(args, kwargs))

    def post_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        self._record(self._adapter.from_router_output(output))


class ModuleCollector:
    """Which modules with parameters ran: a pre-hook per module that removes itself on its first call."""

    def __init__(self) -> None:
        self.ran: set[str] = set()
        self.handles: dict[str, Any] = {}

    def hook_for(self, name: str):  # noqa: ANN201 - returns a hook closure
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            self.ran.add(name)
            self.handles[name].remove()

        return hook


def to_trace(steps: StepCollector, routing: list[RoutingCollector]) -> RoutingTrace:
    """The frozen CPU trace: step masks in one transfer, then each layer's ids concatenated on its device and
    copied once (runs after the hooks are off)."""
    cpu_steps = _steps_to_cpu(steps.steps)
    layers = tuple(_capture_to_cpu(rc.capture, cpu_steps) for rc in routing)
    return RoutingTrace(tuple(rc.capture.layer.name for rc in routing), cpu_steps, layers)


def _steps_to_cpu(steps: list[_Step]) -> tuple[StepTrace, ...]:
    masks = [s.mask for s in steps if s.mask is not None]
    flat = iter(torch.cat([m.to(masks[0].device) for m in masks]).cpu().split([m.numel() for m in masks])
                if masks else ())
    return tuple(StepTrace(s.phase, s.batch, s.seq, None if s.mask is None else next(flat)) for s in steps)


def _capture_to_cpu(capture: _Capture, steps: tuple[StepTrace, ...]) -> LayerTrace:
    layer = capture.layer
    k = max((t.shape[1] for t in capture.ids), default=0)
    if not capture.ids:
        empty = torch.zeros(0, dtype=torch.long)
        return LayerTrace(layer.name, layer.num_experts, layer.params_per_expert,
                          torch.zeros(0, k, dtype=torch.long), None, empty, empty, torch.zeros(0, dtype=torch.bool))
    ids = torch.cat([_pad_k(t, k) for t in capture.ids]).cpu().long()
    weights = None
    if all(w is not None and w.shape == i.shape for w, i in zip(capture.weights, capture.ids)):
        weights = torch.cat([_pad_k(w.float(), k, 0.0) for w in capture.weights]).cpu()
    counts = torch.tensor([t.shape[0] for t in capture.ids], dtype=torch.long)
    step = torch.repeat_interleave(torch.tensor(capture.steps, dtype=torch.long), counts)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(int(counts.sum())) - torch.repeat_interleave(starts, counts)
    real = torch.cat([_mask_for(steps, s, t.shape[0]) for s, t in zip(capture.steps, capture.ids)])
    return LayerTrace(layer.name, layer.num_experts, layer.params_per_expert, ids, weights, step, position, real)


def _mask_for(steps: tuple[StepTrace, ...], s: int, n: int) -> torch.Tensor:
    """The padding mask of step ``s`` for ``n`` rows (all real when the rows are not ``batch x seq``)."""
    mask = steps[s].mask if 0 <= s < len(steps) else None
    return mask if mask is not None and mask.numel() == n else torch.ones(n, dtype=torch.bool)


def _pad_k(t: torch.Tensor, k: int, fill: float | int = -1) -> torch.Tensor:
    if t.shape[1] == k:
        return t
    return torch.cat([t, torch.full((t.shape[0], k - t.shape[1]), fill, dtype=t.dtype, device=t.device)], dim=1)
