"""Tensor sources: one interface over models, state_dicts, snapshots and checkpoint files.

A :class:`Source` names its tensors with their metadata and reads any flat element range of one of them,
as a 1-D view that stays valid until the next :meth:`Source.release`. The comparison and the digest
walk tensors in windows through this interface, so a checkpoint on disk is never held in memory whole.

>>> import torch
>>> src = MemorySource({"w": torch.arange(6.0).reshape(2, 3)}, label="sd")
>>> src.metas()["w"].shape, src.read("w", 2, 3).tolist()
((2, 3), [2.0, 3.0, 4.0])
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Mapping

import torch

from ..errors import CheckpointError  # noqa: F401 - re-exported: the sources raise it

if TYPE_CHECKING:
    from .fingerprint import Snapshot

log = logging.getLogger("runprof")




def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the spelling used in results and JSON)."""
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16``; the inverse of :func:`dtype_name`."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{name!r} is not a torch dtype")
    return dtype


@dataclass(frozen=True)
class TensorMeta:
    """What is known about a tensor without reading its values."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    device: str = "cpu"

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


def windows(numel: int, cuts: set[int] | tuple[int, ...], step: int) -> Iterator[tuple[int, int]]:
    """Flat ``(start, stop)`` ranges covering ``[0, numel)``, at most ``step`` long, never crossing a cut.

    >>> list(windows(10, {4}, 3))
    [(0, 3), (3, 4), (4, 7), (7, 10)]
    """
    start = 0
    for end in sorted({c for c in cuts if 0 < c < numel} | {numel}):
        while start < end:
            stop = min(end, start + max(1, step))
            yield start, stop
            start = stop


class Source:
    """Named tensors read in flat ranges. Subclasses: memory, snapshot, checkpoint files, mapped views."""

    label: str = ""

    def metas(self) -> Mapping[str, TensorMeta]:
        raise NotImplementedError

    def has_values(self, name: str) -> bool:
        """Whether :meth:`read` works for ``name`` (False for snapshots and meta tensors)."""
        return True

    def boundaries(self, name: str) -> tuple[int, ...]:
        """Flat offsets a single :meth:`read` must not cross (segment ends of a composed tensor)."""
        return (self.metas()[name].numel,)

    def read(self, name: str, start: int, count: int) -> torch.Tensor:
        """Elements ``[start, start + count)`` of the flattened tensor, as a 1-D tensor in its dtype."""
        raise NotImplementedError

    def digest(self, name: str) -> str | None:
        """A stored content digest (snapshots only); sources with values are digested by reading them."""
        return None

    def origin(self, name: str) -> str:
        """The name as stored in the underlying model or file (differs for prefix-mapped views)."""
        return name

    def release(self) -> None:
        """Drop pages and views read so far; called between windows so memory stays bounded."""

    def close(self) -> None:
        self.release()


class MemorySource(Source):
    """A model's state_dict or any ``{name: tensor}`` mapping; reads are views on the tensor's device."""

    def __init__(self, tensors: Mapping[str, object], *, label: str) -> None:
        self.label = label
        self._tensors: dict[str, torch.Tensor] = {}
        for name, value in tensors.items():
            if isinstance(value, torch.Tensor):
                self._tensors[name] = value.detach()
            else:
                log.debug("%s: %s is %s, not a tensor: skipped", label, name, type(value).__name__)
        self._metas = {
            n: TensorMeta(tuple(t.shape), t.dtype, str(t.device)) for n, t in self._tensors.items()
        }
        self._flat: tuple[str, torch.Tensor] | None = None

    def metas(self) -> Mapping[str, TensorMeta]:
        return self._metas

    def tensor(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def has_values(self, name: str) -> bool:
        t = self._tensors[name]
        return not t.is_meta and t.layout == torch.strided

    def read(self, name: str, start: int, count: int) -> torch.Tensor:
        if self._flat is None or self._flat[0] != name:
            # reshape copies only a non-contiguous tensor, once per tensor rather than once per window
            self._flat = (name, self._tensors[name].reshape(-1))
        return self._flat[1][start:start + count]

    def release(self) -> None:
        self._flat = None


class SnapshotSource(Source):
    """A :class:`~runprof.snapshots.fingerprint.Snapshot`: metadata and digests, no values."""

    def __init__(self, snap: Snapshot) -> None:
        self.label = snap.source
        self._snap = snap
        self._metas = {
            n: TensorMeta(fp.shape, dtype_from_name(fp.dtype), fp.device) for n, fp in snap.tensors.items()
        }

    def metas(self) -> Mapping[str, TensorMeta]:
        return self._metas

    def has_values(self, name: str) -> bool:
        return False

    def digest(self, name: str) -> str | None:
        return self._snap.tensors[name].digest
