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

from torch import nn

from ..errors import TrackingError, UnsupportedModelError
from ..moe.layer import MoELayer
from ..results import Cause, CountResult, TrackResult, reconcile
from ..static import model_name
from .capture import Capture, CaptureOptions
from .collectors import ModuleCollector, RoutingCollector, StepCollector
from .static_cache import compiled_forward, facts, fast_signature, forget, signature
from .summary import build_trace, summarize
from .targets import layer_device, main_device, output_cache, unwrap
from .trace import RoutingTrace

log = logging.getLogger("runprof")


class Tracker:
    """Records what a model does between ``start()`` and ``stop()`` (or inside ``with``); see :func:`track`."""

    def __init__(self, model: Any, *, routing: bool = True, modules: bool = True, memory: bool = True,
                 verify_weights: bool = False, distributed: bool = False, nvml_interval_s: float = 0.05,
                 memory_peak: bool = True, trace: bool = False, weights: bool = False, coactivation: bool = False,
                 max_steps: int = 10_000, peak_flops: float | None = None, peak_bandwidth: float | None = None,
                 layers: Any = None, name: str | None = None) -> None:
        model, self._wrapped = unwrap(model)
        for flag, value in (("routing", routing), ("modules", modules), ("memory", memory), ("trace", trace),
                            ("verify_weights", verify_weights), ("distributed", distributed), ("weights", weights),
                            ("memory_peak", memory_peak), ("coactivation", coactivation)):
            if not isinstance(value, bool):
                raise TrackingError(f"track({flag}={value!r}): expected True or False")
        if isinstance(nvml_interval_s, bool) or not isinstance(nvml_interval_s, (int, float)) \
                or not nvml_interval_s > 0:
            raise TrackingError(f"track(nvml_interval_s={nvml_interval_s!r}): expected a positive number of seconds")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 0:
            raise TrackingError(f"track(max_steps={max_steps!r}): expected a number of steps >= 0")
        if name is not None and not isinstance(name, str):
            raise TrackingError(f"track(name={name!r}): expected a string")
        for flag, value in (("peak_flops", peak_flops), ("peak_bandwidth", peak_bandwidth)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise TrackingError(f"track({flag}={value!r}): expected a positive number (per second) or None")
        self.peak_flops, self.peak_bandwidth = peak_flops, peak_bandwidth
        if layers is not None and (isinstance(layers, (str, int)) or not all(
                isinstance(x, (str, int)) and not isinstance(x, bool) for x in layers)):
            raise TrackingError(f"track(layers={layers!r}): expected a list of MoE layer names or indices")
        self.layer_choice = None if layers is None else list(layers)
        self.model = model
        self.routing, self.modules, self.memory = routing, modules, memory
        self.verify_weights, self.distributed = verify_weights, distributed
        self.nvml_interval_s, self.memory_peak, self.name = float(nvml_interval_s), memory_peak, name
        self.trace_on, self.weights, self.coactivation, self.max_steps = trace, weights, coactivation, max_steps
        self._stack: contextlib.ExitStack | None = None
        self._result: TrackResult | None = None
        self._local: TrackResult | None = None
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
        self._result = self._local = self._trace = None
        self._cache: Any = None
        self._memory: Any = None
        self._weights_before: Any = None
        self._facts = facts(self.model, self.name or model_name(self.model))
        self.layers: list[MoELayer] = self._facts.layers
        self.static: CountResult = self._facts.static
        self._compiled = compiled_forward(self._facts.modules) or self._wrapped == "compiled"
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

    def _selected(self) -> list[MoELayer]:
        """The MoE layers to capture: all, or those ``layers=`` names (by name or by index among MoE layers)."""
        if not self.routing:
            return []
        if self.layer_choice is None:
            return list(self.layers)
        names = [x.name for x in self.layers]
        chosen = []
        for x in self.layer_choice:
            if isinstance(x, int) and -len(names) <= x < len(names):
                chosen.append(self.layers[x])
            elif isinstance(x, str) and x in names:
                chosen.append(self.layers[names.index(x)])
            else:
                raise TrackingError(f"track(layers=...): {x!r} is not one of the {len(names)} MoE layers "
                                    f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}) or their indices")
        return [x for x in self.layers if any(x is c for c in chosen)]

    def _capture(self) -> Capture:
        layers = self._selected()
        moe = self.static.moe
        base = self.static.params.total - (moe.routed_params if moe else 0)
        k = max([x.top_k or 1 for x in layers], default=1)
        options = CaptureOptions(trace=self.trace_on, weights=self.weights, coactivation=self.coactivation,
                                 compiled=self._compiled,
                                 max_steps=2**62 if self.trace_on else self.max_steps)
        main = main_device(self.model)
        return Capture([x.name for x in layers], [layer_device(x, main) for x in layers],
                       [x.num_experts for x in layers], [x.params_per_expert for x in layers], k, main,
                       base, options)

    def _install(self, stack: contextlib.ExitStack) -> None:
        if self.memory:
            from ..memory import MemoryCollector

            self._memory = stack.enter_context(MemoryCollector(self.model, interval_s=self.nvml_interval_s,
                                                               reset_peak=self.memory_peak,
                                                               resident=self._facts.resident))
            stack.enter_context(self.model.register_forward_hook(self._keep_cache))
        self._cap = self._capture()  # allocated after the memory readings: runprof's own bytes are a row
        self._steps = StepCollector(self._cap, max_steps=self._cap.options.max_steps)
        self._modules = ModuleCollector()
        self._routers: list[RoutingCollector] = []
        stack.enter_context(self.model.register_forward_pre_hook(self._steps, with_kwargs=True))
        stack.enter_context(self.model.register_forward_hook(self._steps.after, with_kwargs=True))
        for i, layer in enumerate(self._selected()):
            self._install_routing(stack, layer, i)
        if self.modules and not self._compiled:
            mc = self._modules
            for name, module in self._facts.with_params:
                mc.handles[name] = module.register_forward_pre_hook(mc.hook_for(name))
            stack.callback(mc.remove_all)

    def _install_routing(self, stack: contextlib.ExitStack, layer: MoELayer, index: int) -> None:
        rc = RoutingCollector(layer, index, self._cap, weights=self.weights or self.trace_on)
        self._routers.append(rc)
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

    def _keep_cache(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        """Keep a reference to the cache object the model returned (its tensors are measured at exit)."""
        cache = output_cache(output)
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
        self._cap.finish()
        self._local = self._build(wall)
        if self.distributed:
            from .distributed import merge_across_ranks

            self._result = merge_across_ranks(self._local, device=main_device(self.model))
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
        """The per-token routing of the run on the CPU (per MoE layer: expert ids, weights, step, position,
        padding), for ``runprof.routing`` statistics; kept only with ``track(model, trace=True)``."""
        if self._result is None:
            raise TrackingError("the trace exists after the tracked region ends")
        if self._trace is None:
            raise TrackingError("no per-token trace was kept: track(model, trace=True) keeps one (counters only "
                                "by default, so memory does not grow with the tokens)")
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
    def _notes(self) -> list[tuple[Cause, dict[str, Any]]]:
        notes: list[tuple[Cause, dict[str, Any]]] = []
        moved = self._moved()
        if moved:
            notes.append((Cause.MODEL_MOVED, moved))
        if self.modules and self._compiled:
            notes.append((Cause.MODULES_NOT_RECORDED, {}))
        if self._cap.n_steps > len(self._steps.meta):
            notes.append((Cause.STEPS_TRUNCATED, {"kept": len(self._steps.meta), "steps": self._cap.n_steps}))
        return notes

    def _moved(self) -> dict[str, Any]:
        """Parameters that changed device inside the region (refused when shapes or dtypes changed)."""
        now, then = fast_signature(self._facts.modules) or signature(self.model), self._facts.signature
        if now == then:
            return {}
        if [x[:3] for x in now] != [x[:3] for x in then]:
            forget(self.model)
            raise TrackingError(
                "the model's parameters changed shape, dtype or names inside the tracked region; runprof's static "
                "counts no longer describe it: track each version of the model in its own region")
        return {"before": sorted({str(x[3]) for x in then}), "after": sorted({str(x[3]) for x in now})}

    def _build(self, wall: float) -> TrackResult:
        unused: tuple[str, ...] = ()
        if self.modules and not self._compiled:
            unused = tuple(n for n in self._modules.handles if n not in self._modules.ran)
        runtime = summarize(self.static, self._cap, self._steps, routing=self.routing, unused_modules=unused,
                            wall_s=wall, notes=tuple(self._notes()), flops=self._facts.flops,
                            peaks=(self.peak_flops, self.peak_bandwidth), ran=self.modules and not self._compiled)
        if self.trace_on:
            self._trace = build_trace(self._cap, self._steps)
        memory = None
        if self._memory is not None:
            meta = self._steps.meta
            memory = self._memory.ledger(cache=self._cache, batch=meta[0].batch if meta else 1,
                                         positions=sum(s.seq for s in meta), capture=self._cap.nbytes())
        self._memory = self._cache = None  # drop the cache reference: the cache belongs to the caller
        return TrackResult(static=self.static, runtime=runtime, reconcile=reconcile(self.static, runtime),
                           memory=memory, extra=self._extra())

    def _extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self._facts.placement is not None:
            extra["placement"] = dict(self._facts.placement)
        if self._weights_before is not None:
            from ..snapshots import compare, snapshot

            diff = compare(self._weights_before, snapshot(self.model))
            # None: some values could not be read (offloaded meta weights), so "unchanged" is not proven
            extra["weights_changed"] = None if diff.verdict == "not_proven" else diff.verdict == "different"
            extra["weights_diff"] = diff.to_dict()
        return extra


def is_tracked(model: Any) -> bool:
    """True while a runprof tracker is installed on ``model`` (found by its hook, not by a flag)."""
    model, _ = unwrap(model)
    return any(isinstance(h, StepCollector) for h in model._forward_pre_hooks.values())


def track(model: Any, *, routing: bool = True, modules: bool = True, memory: bool = True,
          verify_weights: bool = False, distributed: bool = False, nvml_interval_s: float = 0.05,
          memory_peak: bool = True, trace: bool = False, weights: bool = False, coactivation: bool = False,
          max_steps: int = 10_000, peak_flops: float | None = None, peak_bandwidth: float | None = None,
          layers: Any = None, name: str | None = None) -> Tracker:
    """Track a model (an ``nn.Module``, a ``torch.compile``'d module, or a transformers ``Pipeline``) inside a
    ``with`` block; the result is ``t.result`` afterwards.

    Options (keyword-only, kept as attributes): ``routing`` captures which experts every token used, as
    device-side counters whose size does not grow with the tokens; ``trace`` also keeps every token's expert ids
    (``t.trace``; ``weights`` adds the routers' weights, kept in float32); ``coactivation`` counts expert pairs;
    ``max_steps`` per-step records are kept (later steps are aggregated); ``modules`` records which modules with
    parameters ran (not under torch.compile); ``memory`` adds the memory ledger (NVML polled every
    ``nvml_interval_s`` s; ``memory_peak`` resets torch's peak counter of each CUDA device at start so the run's
    own peak is known — this also resets the caller's ``torch.cuda.max_memory_allocated``: pass
    ``memory_peak=False`` to keep it); ``verify_weights`` fingerprints the state_dict before and after;
    ``layers`` limits capture to some MoE layers (names or indices: loads for those, no per-token figures);
    ``distributed`` merges every rank's result at ``stop()`` (a collective); ``peak_flops`` / ``peak_bandwidth``
    (FLOP/s, bytes/s) override the device's known peaks for utilization.

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
                   distributed=distributed, nvml_interval_s=nvml_interval_s, memory_peak=memory_peak, trace=trace,
                   weights=weights, coactivation=coactivation, max_steps=max_steps, peak_flops=peak_flops,
                   peak_bandwidth=peak_bandwidth, layers=layers, name=name)
