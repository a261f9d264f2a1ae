"""Collectors: the hook bodies.

Rules (DESIGN "Cheap"): O(1) Python per call, no host sync (no ``.item()``, ``.tolist()``, ``.cpu()``, no
boolean-mask indexing, no printing a tensor), data stays on the model's device until ``stop()``. The step hook
on the top module always runs eagerly; the routing hooks run inside a compiled forward when the model is
compiled, so there they only do device ops (:meth:`Capture.record_compiled`).
"""
from __future__ import annotations

import copy
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..moe.layer import MoELayer
from .capture import Capture
from .counters import PHASES
from .generation import GenerationInfo, find_generation

log = logging.getLogger("runprof")


@dataclass
class StepMeta:
    """One forward call as the step hook saw it (kept for the first ``max_steps`` calls)."""

    phase: str
    batch: int
    seq: int
    generation: int  # index of the generate() call (prefill) this step belongs to
    t0: float  # perf_counter at the call
    context: int = 0  # positions each row attends to (cached + this call's)
    logits_rows: int = 0  # rows lm_head computes (generate's prefill asks for the last position only)
    t1: float | None = None  # perf_counter when the forward returned
    events: tuple[Any, Any] | None = None  # CUDA events around the forward (recorded, read at stop)


@dataclass
class StepRun:
    """Forward calls past ``max_steps``, folded while they continue one another: ``count`` calls of ``batch`` x
    ``seq`` rows (``logits_rows`` with logits each), the first attending ``context`` positions and each next one
    ``seq`` more (a decode run). Enough for their FLOPs exactly, in memory that does not grow with the steps."""

    phase: str
    batch: int
    seq: int
    logits_rows: int
    context: int
    count: int = 1

    def first(self) -> StepMeta:
        return StepMeta(self.phase, self.batch, self.seq, 0, 0.0, self.context, self.logits_rows)

    def last(self) -> StepMeta:
        return StepMeta(self.phase, self.batch, self.seq, 0, 0.0, self.context + (self.count - 1) * self.seq,
                        self.logits_rows)

    def continues(self, phase: str, batch: int, seq: int, logits_rows: int, context: int) -> bool:
        return (phase, batch, seq, logits_rows) == (self.phase, self.batch, self.seq, self.logits_rows) and \
            context == self.context + self.count * seq


@dataclass
class GenerationState:
    """One ``generate()`` call (or one prefill without it): its config, its real prompt tokens (copies for
    beams or ``num_return_sequences`` included; a device count), which rows have fed their EOS."""

    info: GenerationInfo | None
    rows: int
    prompt: torch.Tensor | int
    done: torch.Tensor | None  # bool [rows], when generate() gave EOS ids and does not search beams
    decode_steps: int = 0


def _shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[torch.Tensor | None, int, int]:
    ids = kwargs.get("input_ids", args[0] if args else None)
    if not isinstance(ids, torch.Tensor):
        ids = kwargs.get("inputs_embeds")
    if not isinstance(ids, torch.Tensor) or ids.dim() < 2:
        return (ids if isinstance(ids, torch.Tensor) else None), *((1, int(ids.shape[0])) if isinstance(
            ids, torch.Tensor) else (0, 0))
    return ids, int(ids.shape[0]), int(ids.shape[1])


class StepCollector:
    """Forward pre-hook on the tracked model: one step per call.

    Phase: a call with grad enabled on a model in training mode is a ``train`` forward. Otherwise a call that
    passes a cache object other than the previous call's is a prefill; a call with the previous call's cache object
    is a decode step; a call without a cache is a prefill, and when it may create its own cache (``use_cache``
    not False), the next call's new cache object continues it (decode). Real rows exclude padding (the
    attention mask) and, inside ``generate()``, rows whose sequence has fed its EOS.
    """

    def __init__(self, capture: Capture, max_steps: int = 10_000) -> None:
        self.capture = capture
        self.meta: list[StepMeta] = []
        self.runs: list[StepRun] = []  # the steps past max_steps (their shapes, for FLOPs)
        self.max_steps = max_steps
        self.rows = dict.fromkeys(PHASES, 0)  # rows computed per phase (padding, finished rows included)
        self.generations: list[GenerationState] = []
        self._last_cache: Any = None  # a weak reference to the cache object of the last call
        self._fresh = False
        self._context = 0
        self.cuda = capture.main if capture.main.type == "cuda" else None
        capture.implicit = self.implicit_step

    def implicit_step(self, rows: int) -> None:
        """A routing call seen before any forward of the tracked model (a submodule called directly): one
        prefill step of ``rows`` rows, all real (eager mode only; under compile such rows are reported missed)."""
        self._new_generation(rows, 1, None)
        self.capture.begin_step("prefill", rows, None)
        self.rows["prefill"] += rows
        if len(self.meta) < self.max_steps:
            self.meta.append(StepMeta("prefill", 0, 0, len(self.generations) - 1, time.perf_counter()))

    def _phase(self, module: nn.Module, kwargs: dict[str, Any]) -> str:
        if module.training and torch.is_grad_enabled():
            return "train"
        cache = kwargs.get("cache", kwargs.get("past_key_values"))  # "cache" since transformers 5.24
        if cache is None:
            # the model may create its cache inside this call: the next unseen cache continues this sequence
            self._fresh = kwargs.get("use_cache") is not False
            return "prefill"
        # the same object as the last call's (by identity, held weakly: a new cache may reuse a freed one's id)
        last = self._last_cache() if self._last_cache is not None else None
        phase = "decode" if last is cache or self._fresh else "prefill"
        try:
            self._last_cache = weakref.ref(cache)
        except TypeError:  # a cache that takes no weak reference: keep it (one object) until the next call
            self._last_cache = lambda: cache
        self._fresh = False
        return phase

    boundary: Any = None  # watch(): called as boundary(phase) before a step begins (may end a record)
    enabled = True  # watch(sample_every=N): False while a record is not sampled

    def seal(self) -> StepCollector:
        """A copy holding this record's steps; this collector starts over (its cache identities kept, so a
        decode step after the seal is still a decode step)."""
        sealed = copy.copy(self)
        self.meta, self.runs, self.rows, self.generations = [], [], dict.fromkeys(PHASES, 0), []
        return sealed

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids, batch, seq = _shape(args, kwargs)
        phase = self._phase(module, kwargs)
        if self.boundary is not None:
            self.boundary(phase)
        if not self.enabled:
            return
        mask = kwargs.get("attention_mask")
        flat = None
        if isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[0] == batch and mask.shape[1] >= seq:
            flat = mask[:, mask.shape[1] - seq:].bool()
        if phase == "prefill":
            self._new_generation(batch, seq, flat)
        elif phase == "decode" and self.generations:
            self.generations[-1].decode_steps += 1
            flat = self._live_rows(ids, batch, seq, flat)
        self.capture.begin_step(phase, batch * seq, None if flat is None else flat.reshape(-1))
        self.rows[phase] += batch * seq
        self._context = (mask.shape[1] if isinstance(mask, torch.Tensor) and mask.dim() == 2 else
                         seq + (self._context if phase == "decode" else 0))
        keep = kwargs.get("logits_to_keep", 0)
        rows = batch * (keep if isinstance(keep, int) and 0 < keep < seq else seq)
        if len(self.meta) >= self.max_steps:
            last = self.runs[-1] if self.runs else None
            if last is not None and last.continues(phase, batch, seq, rows, self._context):
                last.count += 1
            else:
                self.runs.append(StepRun(phase, batch, seq, rows, self._context))
        else:
            events = None
            if self.cuda is not None:
                events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                events[0].record(torch.cuda.current_stream(self.cuda))
            self.meta.append(StepMeta(phase, batch, seq, len(self.generations) - 1, time.perf_counter(),
                                      self._context, rows, None, events))

    def after(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        """Forward post-hook: when the step's forward returned (and its end event on CUDA)."""
        if self.enabled and self.meta and self.meta[-1].t1 is None and len(self.meta) == min(self.capture.n_steps, self.max_steps):
            m = self.meta[-1]
            m.t1 = time.perf_counter()
            if m.events is not None:
                m.events[1].record(torch.cuda.current_stream(self.cuda))

    def _new_generation(self, batch: int, seq: int, mask: torch.Tensor | None) -> None:
        info = find_generation()
        done = None
        if info is not None and info.num_beams == 1 and info.eos is not None:
            done = torch.zeros(batch, dtype=torch.bool, device=info.eos.device)
        prompt = batch * seq if mask is None else mask.sum()
        self.generations.append(GenerationState(info, batch, prompt, done))

    def _live_rows(self, ids: torch.Tensor | None, batch: int, seq: int,
                   mask: torch.Tensor | None) -> torch.Tensor | None:
        """Decode inside generate(): a row that feeds its EOS has finished; it and its later (pad) inputs are
        computed but are no tokens. Counts generated tokens and finished rows on the device."""
        gen = self.generations[-1]
        if gen.done is None or ids is None or ids.dim() != 2 or batch != gen.rows:
            return mask
        gen.done |= torch.isin(ids[:, -1].to(gen.done.device), gen.info.eos)
        live = ~gen.done
        cap = self.capture
        cap.generated += live.sum()
        cap.finished += gen.done.sum()
        rows = live[:, None].expand(batch, seq).to(cap.main)
        return rows if mask is None else mask & rows

    @property
    def steps(self) -> int:
        return self.capture.n_steps


def in_backward() -> bool:
    """True while autograd's engine runs (activation checkpointing re-running a forward inside backward);
    under compilation the check is skipped (the traced graph never runs inside backward)."""
    return not torch.compiler.is_compiling() and torch._C._current_graph_task_id() != -1


class RoutingCollector:
    """Captures the expert ids each token used in one MoE layer, from the layer's adapter.

    Installed as a forward pre-hook on the experts module (``capture == "experts_pre"``) or a forward hook on the
    router (``"router_out"``). A call during backward recomputation (gradient checkpointing) is the same token
    again: it is counted apart, never captured.
    """

    def __init__(self, layer: MoELayer, index: int, capture: Capture, *, weights: bool) -> None:
        self.layer, self.index, self.capture = layer, index, capture
        self._adapter = layer.adapter.bind(layer)
        self._weights = weights
        self._compiled = capture.options.compiled
        self._record = capture.record_compiled if self._compiled else capture.record

    def _take(self, captured: tuple[torch.Tensor, torch.Tensor | None] | None) -> None:
        if captured is None or not self.capture.enabled:
            return
        if (self._compiled and in_backward()) or (not self._compiled and torch._C._current_graph_task_id() != -1):
            self.capture.checks.recomputed[self.index] += 1
            return
        ids, weights = captured
        ids = ids if ids.dim() == 2 else ids.reshape(-1, ids.shape[-1])
        if self._weights and weights is not None:
            weights = weights.detach()
            weights = weights if weights.dim() == 2 else weights.reshape(-1, weights.shape[-1])
        else:
            weights = None
        self._record(self.index, ids, weights)

    def pre_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._take(self._adapter.from_experts_inputs(args, kwargs))

    def post_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        self._take(self._adapter.from_router_output(output))


class ModuleCollector:
    """Which modules with parameters ran: a pre-hook per module that removes itself on its first call (eager
    only: a self-removing hook breaks a compiled graph, so under torch.compile this is not recorded)."""

    def __init__(self) -> None:
        self.ran: set[str] = set()
        self.handles: dict[str, Any] = {}

    def remove_all(self) -> None:
        for handle in self.handles.values():
            handle.remove()

    def hook_for(self, name: str):  # noqa: ANN201 - returns a hook closure
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            self.ran.add(name)
            self.handles[name].remove()

        return hook


__all__ = ["GenerationState", "ModuleCollector", "RoutingCollector", "StepCollector", "StepMeta", "in_backward"]
