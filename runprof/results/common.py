"""What every result shares: the schema and kind header, model identity, and exact per-token statistics."""
from __future__ import annotations

import functools
import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
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


def header(kind: str, env: Env | None = None) -> dict[str, Any]:
    """The first keys of a result's JSON: ``{"schema": SCHEMA, "kind": kind, "env": {...}}`` (``env`` only
    when the result has one: results made by this version always do)."""
    out: dict[str, Any] = {"schema": SCHEMA, "kind": kind}
    if env is not None:
        out["env"] = env.to_dict()
    return out


@functools.lru_cache(maxsize=None)
def _version(package: str) -> str | None:
    module = sys.modules.get(package)
    if module is not None and isinstance(getattr(module, "__version__", None), str):
        return module.__version__
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version(package)
    except (ImportError, PackageNotFoundError):
        return None


@functools.lru_cache(maxsize=None)
def _host_cpu() -> str:
    """The host CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: str) -> str:
    """A device's product name: the GPU's for ``cuda[:N]`` (the device string itself if CUDA cannot say),
    the host CPU's for anything else (``cpu``, and ``meta``, where counting ran on the host)."""
    if device.startswith("cuda"):
        torch = sys.modules.get("torch")
        try:
            return str(torch.cuda.get_device_name(torch.device(device.split(",")[0])))  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - a name is information, never a reason to fail
            return device
    return _host_cpu()


@dataclass(frozen=True)
class Env:
    """Where and when a result was made: versions of runprof, torch and transformers, the device (as the
    result's model names it) and its product name, and the UTC time (ISO 8601). Filled when the result is
    made (:meth:`current`), kept through ``to_dict``/``from_dict``; results compare equal whatever their env.

    >>> e = Env.current("cpu")
    >>> Env.from_dict(e.to_dict()) == e, e.created_utc.endswith("Z")
    (True, True)
    """

    runprof: str
    torch: str | None
    transformers: str | None
    device: str
    device_name: str
    created_utc: str

    @classmethod
    def current(cls, device: str = "cpu") -> Env:
        from .. import __version__

        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return cls(__version__, _version("torch"), _version("transformers"), device, device_name(device), now)

    def to_dict(self) -> dict[str, Any]:
        return {"runprof": self.runprof, "torch": self.torch, "transformers": self.transformers,
                "device": self.device, "device_name": self.device_name, "created_utc": self.created_utc}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Env | None:
        """The env of a saved result (None for JSON written before runprof recorded one)."""
        if d is None:
            return None
        return cls(d["runprof"], d["torch"], d["transformers"], d["device"], d["device_name"], d["created_utc"])


def restore_env(result: Any, d: Mapping[str, Any]) -> Any:
    """``result`` (just rebuilt by ``from_dict``) with the env its JSON held: None when it held none."""
    object.__setattr__(result, "env", Env.from_dict(d.get("env")))
    return result


def fill_env(result: Any, device: str) -> None:
    """In a frozen result's ``__post_init__``: set ``env`` to :meth:`Env.current` when it was not given."""
    if getattr(result, "env", None) is None:
        object.__setattr__(result, "env", Env.current(device or "cpu"))


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


__all__ = ["CONVENTIONS", "GROUPS", "KINDS", "SCHEMA", "Env", "ModelInfo", "Stat", "check_header", "device_name",
           "fill_env", "header", "restore_env"]
