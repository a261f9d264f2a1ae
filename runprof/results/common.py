"""What every result shares: the schema and kind header, model identity, and exact per-token statistics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..errors import InvalidArgumentError

SCHEMA = "runprof/1"
"""The one schema string of every JSON runprof writes; ``kind`` says which result it holds."""

KINDS: tuple[str, ...] = ("run", "count", "compare", "bench", "snapshot")
"""Every kind of result runprof writes (``"kind"`` beside ``"schema"`` in its JSON)."""

GROUPS: tuple[str, ...] = (
    "embeddings",
    "attention",
    "dense_mlp",
    "routed_experts",
    "shared_experts",
    "routers",
    "norms",
    "lm_head",
    "other",
)
"""Parameter groups; every unique parameter belongs to exactly one, so groups sum to the total."""

CONVENTIONS: tuple[str, ...] = ("all", "exclude_input_embedding", "exclude_embeddings")
"""Vendor conventions for 'active params per token' (see ``docs/architecture.md``)."""


def header(kind: str) -> dict[str, Any]:
    """The first keys of a result's JSON: ``{"schema": SCHEMA, "kind": kind}``."""
    return {"schema": SCHEMA, "kind": kind}


def check_header(d: Any, kind: str) -> Mapping[str, Any]:
    """``d`` if it is a JSON object of this schema and ``kind`` (a JSON without ``kind`` is accepted as the
    kind asked for, as runprof wrote before kinds existed); else :class:`InvalidArgumentError`."""
    if not isinstance(d, Mapping):
        raise InvalidArgumentError(f"a saved {kind} result is a JSON object, not {type(d).__name__}")
    if d.get("schema") != SCHEMA:
        raise InvalidArgumentError(
            f"schema {d.get('schema')!r} is not {SCHEMA!r}: this JSON was not written by this runprof version")
    if d.get("kind", kind) != kind:
        raise InvalidArgumentError(f"this JSON holds a {d.get('kind')!r} result, not a {kind!r} result")
    return d


@dataclass(frozen=True)
class ModelInfo:
    """What model a result describes."""

    name: str
    class_name: str
    model_type: str
    dtype: str
    device: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class": self.class_name,
            "model_type": self.model_type,
            "dtype": self.dtype,
            "device": self.device,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelInfo:
        return cls(d["name"], d["class"], d["model_type"], d["dtype"], d["device"])


@dataclass(frozen=True)
class Stat:
    """An exact statistic of a per-token (or per-row) integer quantity: its sum, count, min and max.

    ``mean`` is derived, so statistics of several runs or ranks add exactly (``a + b``).

    >>> a, b = Stat.of([2, 2, 4]), Stat.of([1])
    >>> (a + b).mean, (a + b).min, (a + b).max, (a + b).count
    (2.25, 1, 4, 4)
    >>> Stat().mean is None, Stat() + a == a
    (True, True)
    """

    total: int = 0
    count: int = 0
    min: int | None = None
    max: int | None = None

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    @classmethod
    def of(cls, values: Iterable[int]) -> Stat:
        """The statistic of a sequence of integers or of a 1-D integer tensor (reduced by torch, exactly)."""
        if hasattr(values, "numel") and hasattr(values, "amin"):
            if not values.numel():
                return cls()
            return cls(int(values.sum()), int(values.numel()), int(values.amin()), int(values.amax()))
        items = [int(v) for v in values]
        return cls(sum(items), len(items), min(items), max(items)) if items else cls()

    @classmethod
    def constant(cls, value: int, count: int) -> Stat:
        """``count`` occurrences of ``value``."""
        return cls(value * count, count, value, value) if count else cls()

    def shifted(self, offset: int) -> Stat:
        """Every value minus ``offset``."""
        if not self.count:
            return self
        return Stat(self.total - offset * self.count, self.count, self.min - offset, self.max - offset)

    def __add__(self, other: Stat) -> Stat:
        if not isinstance(other, Stat):
            return NotImplemented
        if not other.count:
            return self
        if not self.count:
            return other
        return Stat(self.total + other.total, self.count + other.count, min(self.min, other.min),
                    max(self.max, other.max))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "min": self.min, "max": self.max, "total": self.total, "count": self.count}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Stat:
        return cls(d["total"], d["count"], d["min"], d["max"])


__all__ = ["CONVENTIONS", "GROUPS", "KINDS", "SCHEMA", "ModelInfo", "Stat", "check_header", "header"]
