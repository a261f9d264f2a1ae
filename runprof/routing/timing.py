"""Timing prefill and decode of ``generate()`` without hooks: a LogitsProcessor that stamps the clock.

``generate`` calls its logits processors once per new token, right after the forward that produced the
token's logits. With a mark just before ``generate`` starts (``start()``), mark 1 closes the prefill
(the first forward, plus generate's own set-up), and marks 1..n span the n − 1 decode forwards. On CUDA
the marks are CUDA events recorded on the current stream *of the clock's device* (the device the prompt
ids are on, which need not be the current device: a model on ``cuda:1`` enqueues its work on cuda:1's
stream, and an event on cuda:0's would time only the host's enqueueing), with no host sync inside the run;
they are read after it, synchronizing that device once. On the CPU the marks are ``time.perf_counter``.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

TIMING_METHOD = (
    "LogitsProcessor timestamps: prefill = start of generate() to the first token's logits (first forward "
    "plus generate's set-up); decode = first to last token's logits (the n - 1 later forwards); CUDA events "
    "on GPU, perf_counter on CPU"
)


@dataclass(frozen=True)
class Spread:
    """Median, min and max of repeated measurements (e.g. tokens per second)."""

    median: float | None
    min: float | None
    max: float | None

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        """Median, min and max of ``values`` (all None when empty).

        >>> Spread.of([3.0, 1.0, 2.0])
        Spread(median=2.0, min=1.0, max=3.0)
        """
        if not values:
            return cls(None, None, None)
        return cls(statistics.median(values), min(values), max(values))

    def to_dict(self) -> dict[str, float | None]:
        return {"median": self.median, "min": self.min, "max": self.max}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Spread:
        return cls(d["median"], d["min"], d["max"])


class StepClock:
    """Marks time at ``start()`` and at every ``mark()``; ``seconds()`` gives each mark after the first.

    >>> clock = StepClock(torch.device("cpu"))
    >>> clock.start(); clock.mark(); clock.mark()
    >>> len(clock.seconds())
    2
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.marks: list[Any] = []

    def start(self) -> None:
        self.marks = []
        self.mark()

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))  # the event is created on that stream's device
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        """Seconds from ``start()`` to each later mark (synchronizes the clock's device once, after the run)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return [self.marks[0].elapsed_time(m) / 1000.0 for m in self.marks[1:]]
        return [m - self.marks[0] for m in self.marks[1:]]

    def prefill_decode_s(self) -> tuple[float, float | None]:
        """(prefill seconds, decode seconds or None when only one token was generated)."""
        s = self.seconds()
        return s[0], (s[-1] - s[0]) if len(s) > 1 else None

    def processor(self) -> Any:
        """A transformers ``LogitsProcessor`` that marks this clock and returns the scores unchanged."""
        from transformers import LogitsProcessor

        clock = self

        class ClockProcessor(LogitsProcessor):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                clock.mark()
                return scores

        return ClockProcessor()


__all__ = ["Spread", "StepClock", "TIMING_METHOD"]
