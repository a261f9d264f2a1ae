"""``runprof.watch``: hooks installed once, one result per ``generate()`` call (or per forward, or per explicit
``with w.call():``), for services and sweeps that must not pay discovery and static counts per request.

A record ends at the next record's first step (``per="generate"``: the next prefill; ``per="forward"``: the next
forward), at the end of ``w.call()``, or when the watch stops. Ending a record does no host sync: its counters are
cloned on the device and the live ones zeroed in place; results are built (one copy to the CPU) when
``w.records`` is read, :meth:`Watcher.collect` is called, or the watch stops — outside the hooks. Discovery and static
counts come from the per-model cache and are recomputed only when the model's parameters change.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import TrackingError
from ..results import TrackResult, reconcile
from ..static import model_name
from .capture import Capture
from .collectors import StepCollector
from .static_cache import facts
from .summary import build_trace, summarize
from .tracker import Tracker

PER = ("generate", "forward", "call")


@dataclass
class _Sealed:
    capture: Capture
    steps: StepCollector
    static: Any  # the static counts when the record ended (a set_top_k between records changes them)
    flops: Any  # the model's FLOPs structure then
    index: int
    start_unix_s: float
    wall_s: float
    sampled: bool


class Watcher(Tracker):
    """A :class:`Tracker` whose region yields one result per call; see :func:`watch`."""

    def __init__(self, model: Any, *, per: str = "generate", sample_every: int = 1, jsonl: str | Path | None = None,
                 memory: bool = False, modules: bool = False, **options: Any) -> None:
        if per not in PER:
            raise TrackingError(f"watch(per={per!r}): expected one of {', '.join(PER)}")
        if isinstance(sample_every, bool) or not isinstance(sample_every, int) or sample_every < 1:
            raise TrackingError(f"watch(sample_every={sample_every!r}): expected an integer >= 1")
        if memory or modules:
            raise TrackingError("watch() keeps no memory ledger and no unused-module list per record; use track() "
                                "for one region with them")
        super().__init__(model, memory=False, modules=False, **options)
        self.per, self.sample_every = per, sample_every
        self.jsonl = None if jsonl is None else Path(jsonl)
        self._records: list[TrackResult] = []
        self._traces: list[Any] = []
        self._pending: list[_Sealed] = []

    def start(self) -> Watcher:
        super().start()
        self._index, self._open = 0, False
        self._begin()
        if self.per == "call":
            self._steps.enabled = self._cap.enabled = False
        if self.per != "call":
            self._steps.boundary = self._boundary
        return self

    # --- records -------------------------------------------------------------------------------------------
    def _begin(self) -> None:
        self._open_t, self._open_unix = time.perf_counter(), time.time()
        sampled = self._index % self.sample_every == 0
        self._steps.enabled = self._cap.enabled = sampled

    def _boundary(self, phase: str) -> None:
        """Step hook: a new prefill (``per="generate"``) or any forward (``per="forward"``) ends the open record."""
        if self.per == "forward" or phase == "prefill":
            if self._open:
                self._seal()
            self._open = True

    def _seal(self) -> None:
        sampled = self._steps.enabled
        wall = time.perf_counter() - self._open_t
        now = facts(self.model, self.name or model_name(self.model))
        self._pending.append(_Sealed(self._cap.seal(), self._steps.seal(), now.static, now.flops, self._index,
                                     self._open_unix, wall, sampled))
        self._index += 1
        self._open = False
        self._begin()
        if self.per == "call":  # outside a call nothing is recorded
            self._steps.enabled = self._cap.enabled = False

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """One record for exactly what runs inside the block (``per="call"``, or to mark a boundary by hand)."""
        if self._stack is None:
            raise TrackingError("watch().call() needs a started watch: use it inside `with runprof.watch(model) as w:`")
        if self._cap.n_steps:
            self._seal()
        self._open = self.per == "call"
        self._begin()
        try:
            yield
        finally:
            self._seal()

    def collect(self) -> list[TrackResult]:
        """Build the records that ended since the last call (one copy to the CPU each); return them."""
        built = []
        for s in self._pending:
            if not s.sampled:
                continue
            t0 = time.perf_counter()
            runtime = summarize(s.static, s.capture, s.steps, routing=self.routing, unused_modules=(),
                                wall_s=s.wall_s, flops=s.flops, peaks=(self.peak_flops, self.peak_bandwidth))
            extra = {"record": {"index": s.index, "start_unix_s": s.start_unix_s, "wall_s": s.wall_s,
                                "sample_every": self.sample_every}}
            if self.trace_on:
                self._trace = build_trace(s.capture, s.steps)
                self._traces.append(self._trace)
            result = TrackResult(static=s.static, runtime=runtime, reconcile=reconcile(s.static, runtime),
                                 extra=extra)
            result.extra["record"]["runprof_s"] = time.perf_counter() - t0
            built.append(result)
            if self.jsonl is not None:
                with self.jsonl.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(result.to_dict()) + "\n")
        self._pending = []
        self._records += built
        return built

    @property
    def records(self) -> list[TrackResult]:
        """Every sampled record so far (the open one excluded)."""
        self.collect()
        return list(self._records)

    @property
    def traces(self) -> list[Any]:
        """With ``trace=True``: each record's per-token trace, in the order of :attr:`records`."""
        self.collect()
        return list(self._traces)

    def stop(self) -> TrackResult:
        """End the open record, remove the hooks, build what is left; the result is the combination of every
        sampled record (``w.records`` has them one by one)."""
        if self._stack is None:
            raise TrackingError("stop() called on a watch that is not running")
        if self._cap.n_steps:
            self._seal()
        stack, self._stack = self._stack, None
        stack.close()
        records = self.records
        if not records:
            raise TrackingError("the watch saw no sampled call: there is no record to report")
        self._result = self._local = TrackResult.combine(*records)
        return self._result


def watch(model: Any, *, per: str = "generate", sample_every: int = 1, jsonl: str | Path | None = None,
          layers: Any = None, **options: Any) -> Watcher:
    """Install runprof's hooks once and get one result per call: ``per="generate"`` (each ``generate()``, from one
    prefill to the next), ``"forward"`` (each forward) or ``"call"`` (each ``with w.call():``). ``sample_every=N``
    keeps one record in N (the others cost one Python check per hook); ``jsonl`` appends each record to a JSON-lines
    file as it is built; ``layers`` limits capture to some MoE layers; other options as :func:`track` (no memory
    ledger or module list per record).
    ``w.records`` are the results, each with ``extra["record"]``: index, start time, wall time and the time runprof
    spent building it.

    >>> import torch, runprof
    >>> from transformers import MixtralConfig, AutoModelForCausalLM
    >>> model = AutoModelForCausalLM.from_config(MixtralConfig(hidden_size=32, intermediate_size=64,
    ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=128)).eval()
    >>> with runprof.watch(model) as w:
    ...     for n in (3, 5):
    ...         _ = model.generate(torch.arange(4, 4 + n)[None], max_new_tokens=2, do_sample=False)
    >>> [r.runtime.tokens["prefill"] for r in w.records]
    [3, 5]
    """
    return Watcher(model, per=per, sample_every=sample_every, jsonl=jsonl, layers=layers, **options)


__all__ = ["Watcher", "watch"]
