"""How long a tracked run's forward calls took: time to first token, per-step decode latency, tokens per second."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class Timing:
    """A distribution of durations in seconds: count, total, median, 90th percentile (nearest rank), min, max.

    >>> t = Timing.of([0.1, 0.3, 0.2, 0.4])
    >>> t.count, round(t.total, 3), round(t.median, 3), t.p90, t.min, t.max
    (4, 1.0, 0.25, 0.4, 0.1, 0.4)
    """

    count: int
    total: float
    median: float | None
    p90: float | None
    min: float | None
    max: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Timing:
        xs = sorted(float(v) for v in values)
        if not xs:
            return cls(0, 0.0, None, None, None, None)
        rank = max(0, -(-9 * len(xs) // 10) - 1)  # nearest rank: ceil(0.9 n) - 1
        return cls(len(xs), sum(xs), statistics.median(xs), xs[rank], xs[0], xs[-1])

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Timing:
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class LatencyInfo:
    """Wall time of every forward call (the first ``steps_timed``), without a host sync in the region.

    ``clock`` is ``cuda_events`` (events recorded on the model's device around each forward, read at stop) or
    ``perf_counter`` (the host clock, right on the CPU). ``ttft_s``: the prefill forward of each generation
    (time to first token, sampling excluded); ``decode_forward_s``: each decode forward; ``decode_step_s``:
    from one decode forward's start to the next one's (what a user waits per token: sampling and host work
    included; the last step of a generation counts its forward). Tokens per second divide real tokens by those
    totals.
    """

    clock: str
    steps_timed: int
    ttft_s: Timing
    prefill_forward_s: Timing
    decode_forward_s: Timing
    decode_step_s: Timing
    train_forward_s: Timing
    prefill_tokens_per_s: float | None
    decode_tokens_per_s: float | None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, Timing) else v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyInfo:
        kw = {}
        for f in fields(cls):
            v = d[f.name]
            kw[f.name] = Timing.from_dict(v) if isinstance(v, Mapping) else v
        return cls(**kw)


__all__ = ["LatencyInfo", "Timing"]
