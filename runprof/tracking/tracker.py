"""``runprof.track``: the only code that registers hooks.

Every hook lives in one ``ExitStack``: a failure half-way through ``start()`` unwinds what was installed,
and ``stop()`` removes every hook *before* building the result, on every exit path. Each ``start()`` begins
from nothing, so one tracker used for several regions gives each its own result.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import torch
from torch import nn

from ..errors import TrackingError, UnsupportedModelError
from ..moe.discovery import check_readable, find_moe_layers
from ..moe.layer import MoELayer
from ..results import CountResult, TrackResult, reconcile
from ..static import count_model, model_name
from .collectors import ModuleCollector, RoutingCollector, StepCollector, to_trace
from .summary import summarize
from .trace import RoutingTrace

log = logging.getLogger("runprof")


class Tracker:
    """Records what a model does between ``start()`` and ``stop()`` (or inside ``with``).

    Options (keyword-only, kept as attributes): ``routing`` captures expert ids per token in every MoE
    layer; ``modules`` records which modules with parameters ran; ``memory`` adds the memory ledger (GPU rows
    on CUDA models, one ledger per GPU under a device map, process RSS on CPU; NVML is polled from a
    background thread every ``nvml_interval_s`` seconds for the peak; ``memory_peak`` resets torch's peak
    counter of each CUDA device at start, so the run's own peak is known: this also resets the caller's
    ``torch.cuda.max_memory_allocated``; pass ``memory_peak=False`` to keep it, and the run's peak is then
    reported only when it exceeds the peak before the run); ``verify_weights`` fingerprints the
    state_dict before and after and reports any change. ``distributed`` merges every rank's result at
    ``stop()`` (a collective: every rank must stop, see :func:`runprof.tracking.distributed.merge_across_ranks`);
    ``.result`` is then the merged result and ``.local_result`` this rank's own. A model with an accelerate
    device map (or offloaded weights) gets ``result.extra["placement"]``: parameter bytes per device.
    """

    def __init__(self, model: nn.Module, *, routing: bool = True, modules: bool = True, memory: bool = True,
                 verify_weights: bool = False, distributed: bool = False, nvml_interval_s: float = 0.05,
                 memory_peak: bool = True, name: str | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TrackingError(f"track() takes a torch.nn.Module, not {type(model).__name__}")
        for flag, value in (("routing", routing), ("modules", modules), ("memory", memory),
                            ("verify_weights", verify_weights), ("distributed", distributed),
                            ("memory_peak", memory_peak)):
            if not isinstance(value, bool):
                raise TrackingError(f"track({flag}={value!r}): expected True or False")
        if isinstance(nvml_interval_s, bool) or not isinstance(nvml_interval_s, (int, float)) \
                or not nvml_interval_s > 0:
            raise TrackingError(f"track(nvml_interval_s={nvml_interval_s!r}): expected a positive number of seconds")
        if name is not None and not isinstance(name, str):
            raise TrackingError(f"track(name={name!r}): expected a string")
        self.model = model
        self.routing, self.modules, self.memory = routing, modules, memory
        self.verify_weights, self.distributed = verify_weights, distributed
        self.nvml_interval_s, self.memory_peak, self.name = float(nvml_interval_s), memory_peak, name
        self._stack: contextlib.ExitStack | None = None
        self._result: TrackResult | None = None
        self._local: TrackResult | None = None
        self._trace: RoutingTrace | None = None
        self._reset()

    def _reset(self) -> None:
        """Fresh collectors: every region starts from nothing."""
        self._steps = StepCollector()
        self._routing: list[RoutingCollector] = []
        self._modules = ModuleCollector()
        self._memory: Any = None
        self._cache: Any = None
        self._weights_before: Any = None
        self._t0 = 0.0

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> Tracker:
        """Install the hooks. Raises :class:`TrackingError` if this model is already tracked."""
        if self._stack is not None:
            raise TrackingError("this tracker is already started")
        if is_tracked(self.model):
            raise TrackingError(
                f"{type(self.model).__name__} is already being tracked; nested runprof.track on one model is "
                "not supported (stop the outer tracker first)"
            )
        self._reset()
        self._result = self._local = self._trace = None
        self.layers: list[MoELayer] = find_moe_layers(self.model)
        check_readable(self.model, self.layers)
        self.static: CountResult = count_model(self.model, self.layers, name=self.name or model_name(self.model))
        if self.verify_weights:
            from ..snapshots import snapshot

            self._weights_before = snapshot(self.model)
        stack = contextlib.ExitStack()
        try:
            self._install(stack)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        self._t0 = time.perf_counter()
        return self

    def _install(self, stack: contextlib.ExitStack) -> None:
        stack.enter_context(self.model.register_forward_pre_hook(self._steps, with_kwargs=True))
        if self.routing:
            for layer in self.layers:
                self._routing.append(self._install_routing(stack, layer))
        if self.modules:
            mc = self._modules
            for name, module in self.model.named_modules():
                if any(True for _ in module.parameters(recurse=False)):
                    mc.handles[name] = module.register_forward_pre_hook(mc.hook_for(name))
                    stack.callback(mc.handles[name].remove)
        if self.memory:
            from ..memory import MemoryCollector

            self._memory = stack.enter_context(MemoryCollector(self.model, interval_s=self.nvml_interval_s,
                                                                  reset_peak=self.memory_peak))
            stack.enter_context(self.model.register_forward_hook(self._keep_cache))

    def _install_routing(self, stack: contextlib.ExitStack, layer: MoELayer) -> RoutingCollector:
        rc = RoutingCollector(layer, self._steps)
        if layer.adapter.capture == "experts_pre":
            target = layer.adapter.hook_module(layer)
            stack.enter_context(target.register_forward_pre_hook(rc.pre_hook, with_kwargs=True))
        elif layer.router is not None:
            stack.enter_context(layer.router.register_forward_hook(rc.post_hook, with_kwargs=True))
        else:
            raise UnsupportedModelError(
                f"{layer.name}: adapter {layer.adapter.name!r} reads the router's output but no router was found; "
                f"register an adapter for {type(layer.experts).__name__} (runprof.moe.register_adapter)"
            )
        return rc

    def _keep_cache(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        """Keep a reference to the cache object the model returned (its tensors are measured at exit)."""
        cache = getattr(output, "past_key_values", None) or getattr(output, "cache", None)
        if cache is not None:
            self._cache = cache

    def stop(self) -> TrackResult:
        """Remove every hook, then build and return the result (also kept as ``.result``)."""
        if self._stack is None:
            if self._result is not None:
                return self._result
            raise TrackingError("stop() called on a tracker that was never started")
        wall = time.perf_counter() - self._t0
        stack, self._stack = self._stack, None
        stack.close()  # hooks come off before any result is built
        self._local = self._build(wall)
        if self.distributed:
            from .distributed import merge_across_ranks

            self._result = merge_across_ranks(self._local, device=_first_device(self.model))
        else:
            self._result = self._local
        return self._result

    def __enter__(self) -> Tracker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.stop()
        elif self._stack is not None:  # an exception inside the region: unhook, keep the exception
            stack, self._stack = self._stack, None
            stack.close()

    @property
    def trace(self) -> RoutingTrace:
        """The raw routing of the run on the CPU (per MoE layer: expert ids, weights, step, position,
        padding), for ``runprof.routing`` statistics. Available after the tracked region ends."""
        if self._trace is None:
            raise TrackingError("the trace exists after the tracked region ends")
        return self._trace

    @property
    def result(self) -> TrackResult:
        """The frozen result, after ``stop()`` or the end of the ``with`` block."""
        if self._result is None:
            raise TrackingError("the result exists after the tracked region ends (exit the with block or call stop())")
        return self._result

    @property
    def local_result(self) -> TrackResult:
        """This rank's own result (per-step records and memory included); ``.result`` unless ``distributed``."""
        if self._local is None:
            raise TrackingError("the result exists after the tracked region ends (exit the with block or call stop())")
        return self._local

    # --- result --------------------------------------------------------------------------------------
    def _build(self, wall: float) -> TrackResult:
        self._trace = to_trace(self._steps, self._routing)
        unused: tuple[str, ...] = ()
        if self.modules:
            unused = tuple(n for n in self._modules.handles if n not in self._modules.ran)
        runtime = summarize(self.static, self._trace, unused_modules=unused, wall_s=wall)
        memory = None
        if self._memory is not None:
            first = self._trace.steps[0] if self._trace.steps else None
            memory = self._memory.ledger(cache=self._cache, batch=first.batch if first is not None else 1,
                                         positions=sum(s.seq for s in self._trace.steps))
        self._memory = self._cache = None  # drop the cache reference: the cache belongs to the caller
        return TrackResult(static=self.static, runtime=runtime, reconcile=reconcile(self.static, runtime),
                           memory=memory, extra=self._extra())

    def _extra(self) -> dict[str, Any]:
        from .distributed import placement

        extra: dict[str, Any] = {}
        where = placement(self.model)
        if where is not None:
            extra["placement"] = where
        if self._weights_before is not None:
            from ..snapshots import compare, snapshot

            diff = compare(self._weights_before, snapshot(self.model))
            # None: some values could not be read (offloaded meta weights), so "unchanged" is not proven
            extra["weights_changed"] = None if diff.verdict == "not_proven" else diff.verdict == "different"
            extra["weights_diff"] = diff.to_dict()
        return extra


def _first_device(model: nn.Module) -> torch.device | None:
    first = next(iter(model.parameters()), None)
    return None if first is None else first.device


def is_tracked(model: nn.Module) -> bool:
    """True while a runprof tracker is installed on ``model`` (found by its hook, not by a flag)."""
    return any(isinstance(h, StepCollector) for h in model._forward_pre_hooks.values())


def track(model: nn.Module, *, routing: bool = True, modules: bool = True, memory: bool = True,
          verify_weights: bool = False, distributed: bool = False, nvml_interval_s: float = 0.05,
          memory_peak: bool = True, name: str | None = None) -> Tracker:
    """Track a model inside a ``with`` block; the result is ``t.result`` afterwards (see :class:`Tracker`).

    >>> import torch, runprof
    >>> from transformers import MixtralConfig, AutoModelForCausalLM
    >>> cfg = MixtralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                     num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    >>> model = AutoModelForCausalLM.from_config(cfg).eval()
    >>> with runprof.track(model) as t:
    ...     _ = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, do_sample=False)
    >>> t.result.runtime.experts_per_token.mean
    2.0
    """
    return Tracker(model, routing=routing, modules=modules, memory=memory, verify_weights=verify_weights,
                   distributed=distributed, nvml_interval_s=nvml_interval_s, memory_peak=memory_peak, name=name)
