"""FLOPs of a tracked run and how well it used the device: integers in FLOPs (not MACs) and bytes, rates per
second, ratios as fractions. Unknown figures are None with a :class:`Cause`."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from .causes import Cause
from .common import Stat

FLOP_PHASES: tuple[str, ...] = ("prefill", "decode", "train")
FLOP_GROUPS: tuple[str, ...] = ("attention", "attention_core", "dense_mlp", "routed_experts", "shared_experts",
                                "routers", "lm_head", "other")
"""Where FLOPs go: the parameter groups of the weights that did them (``attention``: the projections), plus the
attention core (QKᵀ and AV); ``other``: weights in no named group."""


@dataclass(frozen=True)
class FlopsInfo:
    """The FLOPs a run did, measured from what ran (see ``docs/architecture.md``, FLOPs).

    ``total`` counts the attention core causally (the keys each query's mask lets through: what MFU counts);
    ``total_eager_attention`` counts it as the eager path computes it (the whole masked matrix): equal to
    ``torch.utils.flop_counter.FlopCounterMode`` under eager attention and eager experts. ``by_phase`` and
    ``by_group`` split ``total``. ``per_token`` is per row computed (padding included): its total and count are
    exact (mean = FLOPs per row), min and max are the lightest and heaviest step's FLOPs per row (rounded down and
    up). ``per_step``: each kept step's FLOPs (None when a step's expert assignments are not known exactly).
    ``not_covered``: modules whose own computation is not counted (linear-attention or SSM recurrences,
    convolutions, attention kinds runprof does not model), by name; their linear weights are counted.
    """

    total: int
    total_eager_attention: int
    by_phase: dict[str, int]
    by_group: dict[str, int]
    per_token: Stat
    per_step: tuple[int, ...] | None = None
    not_covered: tuple[str, ...] = ()

    def __add__(self, other: FlopsInfo) -> FlopsInfo:
        if not isinstance(other, FlopsInfo):
            return NotImplemented
        steps = None if self.per_step is None or other.per_step is None else self.per_step + other.per_step
        return FlopsInfo(self.total + other.total, self.total_eager_attention + other.total_eager_attention,
                         {k: self.by_phase.get(k, 0) + other.by_phase.get(k, 0) for k in FLOP_PHASES},
                         {k: self.by_group.get(k, 0) + other.by_group.get(k, 0) for k in FLOP_GROUPS},
                         self.per_token + other.per_token, steps,
                         tuple(dict.fromkeys(self.not_covered + other.not_covered)))

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "total_eager_attention": self.total_eager_attention,
                "by_phase": dict(self.by_phase), "by_group": dict(self.by_group), "per_token": self.per_token.to_dict(),
                "per_step": None if self.per_step is None else list(self.per_step),
                "not_covered": list(self.not_covered)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FlopsInfo:
        return cls(d["total"], d["total_eager_attention"], dict(d["by_phase"]), dict(d["by_group"]),
                   Stat.from_dict(d["per_token"]), None if d.get("per_step") is None else tuple(d["per_step"]),
                   tuple(d.get("not_covered", ())))


@dataclass(frozen=True)
class UtilizationInfo:
    """Achieved FLOP/s and bytes/s of a run's forward calls against the device's peaks.

    ``peak_flops_per_s`` is the device's published dense figure for the run's dtype (``peak_source``: ``"table"``
    with the matched ``entry``, or ``"given"``: ``track(peak_flops=...)``; likewise ``peak_bytes_per_s``); None with ``cause`` when unknown (a
    CPU). Per phase: ``forward_s`` (the summed forward times), ``flops_per_s`` and ``mfu`` (causal FLOPs),
    ``bytes`` moved (weights read: every non-expert weight + the distinct experts each step touched × bytes per
    expert + the KV cache positions read), ``bytes_per_s``, ``bandwidth_utilization`` and ``intensity`` (FLOPs per
    byte, the roofline's x). ``decode_bytes_per_step``: the exact statistic over decode steps.
    """

    device: str
    device_name: str | None
    dtype: str
    peak_flops_per_s: float | None
    peak_bytes_per_s: float | None
    peak_source: dict[str, str | None]  # "flops" / "bandwidth": "given", "table" or None; "entry"
    cause: Cause | None
    forward_s: dict[str, float | None]
    flops_per_s: dict[str, float | None]
    mfu: dict[str, float | None]
    bytes: dict[str, int | None]
    bytes_per_s: dict[str, float | None]
    bandwidth_utilization: dict[str, float | None]
    intensity: dict[str, float | None]
    decode_bytes_per_step: Stat
    time_cause: Cause | None = None  # why the rates are None (steps not all timed)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in d.items():
            if isinstance(v, dict):
                d[k] = dict(v)
        d["cause"] = None if self.cause is None else self.cause.value
        d["time_cause"] = None if self.time_cause is None else self.time_cause.value
        d["decode_bytes_per_step"] = self.decode_bytes_per_step.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UtilizationInfo:
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw = {k: dict(v) if isinstance(v, Mapping) else v for k, v in kw.items()}
        kw["cause"] = None if d["cause"] is None else Cause(d["cause"])
        kw["time_cause"] = None if d.get("time_cause") is None else Cause(d["time_cause"])
        kw["decode_bytes_per_step"] = Stat.from_dict(d["decode_bytes_per_step"])
        return cls(**kw)


__all__ = ["FLOP_GROUPS", "FLOP_PHASES", "FlopsInfo", "UtilizationInfo"]
