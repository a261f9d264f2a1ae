"""``runprof.track``: the only code that registers hooks.

Every hook lives in one ``ExitStack``: a failure half-way through ``start()`` unwinds what was installed,
and ``stop()`` removes every hook *before* building the result, on every exit path.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import TrackingError, UnsupportedModelError
from ..moe.discovery import MoELayer, check_readable, config_top_k, find_moe_layers
from ..results import TrackResult
from ..static import count_model, model_name
from .collectors import ModuleCollector, RoutingCollector, Step, StepCollector
from .summary import LayerCalls, reconcile, steps_to_cpu, summarize, to_cpu

log = logging.getLogger("runprof")


@dataclass(frozen=True)
class RoutingTrace:
    """Routing captured in one tracked run, on the CPU.

    ``steps[i]`` is forward call i (phase, batch, seq, bool mask of real tokens or None). For layer j,
    ``layers[j]`` holds one row per routed token: ``ids [N, k]`` (-1 = no expert), ``weights [N, k]`` or
    None, ``step [N]``, ``position [N]`` (row inside its step: ``b * seq + t`` for a ``[batch, seq]`` call)
    and ``real [N]`` (False for padding).
    """

    layer_names: tuple[str, ...]
    steps: list[Step]
    layers: list[LayerCalls]


class Tracker:
    """Records what a model does between ``start()`` and ``stop()`` (or inside ``with``).

    Options (keyword-only): ``routing`` captures expert ids per token in every MoE layer; ``modules``
    records which modules with parameters ran; ``memory`` adds the memory ledger (default on; GPU rows
    on CUDA models, one ledger per GPU under a device map, process RSS on CPU; NVML is polled from a
    background thread every ``nvml_interval_s`` seconds for the peak); ``verify_weights``
    fingerprints the state_dict before and after and reports any change.
    ``distributed`` merges every rank's result at ``stop()`` (a collective: every rank must stop, see
    :func:`runprof.tracking.distributed.merge_across_ranks`); ``.result`` is then the merged result and
    ``.local_result`` this rank's own. A model with an accelerate device map (or offloaded weights) gets
    ``result.extra["placement"]``: parameter bytes per device, ``disk`` included.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        routing: bool = True,
        modules: bool = True,
        memory: bool | None = None,
        verify_weights: bool = False,
        distributed: bool = False,
        nvml_interval_s: float = 0.05,
        name: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TrackingError(f"track() takes a torch.nn.Module, not {type(model).__name__}")
        if not nvml_interval_s > 0:
            raise TrackingError(f"nvml_interval_s must be a positive number of seconds, not {nvml_interval_s!r}")
        self.model = model
        self.options = {"routing": routing, "modules": modules, "memory": memory, "verify_weights": verify_weights,
                        "distributed": distributed, "nvml_interval_s": nvml_interval_s}
        self.name = name
        self._stack: contextlib.ExitStack | None = None
        self._result: TrackResult | None = None
        self._local: TrackResult | None = None
        self.steps = StepCollector()
        self.routing: list[RoutingCollector] = []
        self.module_collector = ModuleCollector()
        self.layers: list[MoELayer] = []
        self._memory: Any = None
        self._weights_before: Any = None
        self._t0 = 0.0
        self._trace: RoutingTrace | None = None

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
        self.layers = find_moe_layers(self.model)
        check_readable(self.model, self.layers)
        self.static = count_model(self.model, self.layers, name=self.name or model_name(self.model))
        self._top_k_router = self.layers[0].top_k if self.layers else None
        if self.options["verify_weights"]:
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
        stack.enter_context(self.model.register_forward_pre_hook(self.steps, with_kwargs=True))
        if self.options["routing"]:
            for layer in self.layers:
                rc = RoutingCollector(layer, self.steps)
                if layer.adapter.capture == "experts_pre":
                    target = layer.adapter.hook_module(layer)
                    stack.enter_context(target.register_forward_pre_hook(rc.pre_hook, with_kwargs=True))
                elif layer.router is not None:
                    stack.enter_context(layer.router.register_forward_hook(rc.post_hook, with_kwargs=True))
                else:
                    raise UnsupportedModelError(
                        f"{layer.name}: adapter {layer.adapter.name!r} reads the router's output but no router "
                        f"was found; register an adapter for {type(layer.experts).__name__} "
                        "(runprof.moe.register_adapter)"
                    )
                self.routing.append(rc)
        if self.options["modules"]:
            mc = self.module_collector
            for name, module in self.model.named_modules():
                if any(True for _ in module.parameters(recurse=False)):
                    mc.handles[name] = module.register_forward_pre_hook(mc.hook_for(name))
                    stack.callback(mc.handles[name].remove)
        if self.options["memory"] is not False:
            from ..memory import MemoryCollector

            collector = MemoryCollector(self.model, interval_s=self.options["nvml_interval_s"])
            self._memory = stack.enter_context(collector)
            stack.enter_context(self.model.register_forward_hook(self._keep_cache))

    def _keep_cache(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        """Keep a reference to the cache object the model returned (its tensors are measured at exit)."""
        cache = getattr(output, "past_key_values", None) or getattr(output, "cache", None)
        if cache is not None:
            self._memory.cache = cache

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
        self._result = self._local.merge_across_ranks() if self.options["distributed"] else self._local
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
        if self._result is None:
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
        steps = steps_to_cpu(self.steps.steps)
        calls = [to_cpu(rc.trace, steps) for rc in self.routing]
        self._trace = RoutingTrace(layer_names=tuple(layer.name for layer in self.layers), steps=steps, layers=calls)
        unused: tuple[str, ...] = ()
        if self.options["modules"]:
            unused = tuple(n for n in self.module_collector.handles if n not in self.module_collector.ran)
        runtime = summarize(
            self.static, steps, calls,
            top_k_config=config_top_k(getattr(self.model, "config", None)),
            top_k_router=self._top_k_router,
            unused_modules=unused,
            layer_names=tuple(layer.name for layer in self.layers),
            wall_s=wall,
        )
        extra: dict[str, Any] = {}
        from .distributed import placement

        where = placement(self.model)
        if where is not None:
            extra["placement"] = where
        if self._weights_before is not None:
            from ..snapshots import compare, snapshot

            diff = compare(self._weights_before, snapshot(self.model))
            extra["weights_changed"] = not diff.identical
            extra["weights_diff"] = diff.to_dict()
        memory = None
        if self._memory is not None:
            first = steps[0] if steps else None
            self._memory.batch = first.batch if first is not None else 1
            self._memory.positions = sum(s.seq for s in steps)
            memory = self._memory.ledger()
            self._memory.cache = None  # drop the reference: the cache belongs to the caller
        return TrackResult(
            static=self.static, runtime=runtime, reconcile=reconcile(self.static, runtime, calls),
            memory=memory, extra=extra,
        )


def is_tracked(model: nn.Module) -> bool:
    """True while a runprof tracker is installed on ``model`` (found by its hook, not by a flag)."""
    return any(isinstance(h, StepCollector) for h in model._forward_pre_hooks.values())


def track(model: nn.Module, **options: Any) -> Tracker:
    """Track a model inside a ``with`` block; the result is ``t.result`` afterwards.

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
    return Tracker(model, **options)
