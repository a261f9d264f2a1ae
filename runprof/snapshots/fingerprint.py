"""State-dict snapshots: shape, dtype, device, numel and a content digest of every tensor.

The digest is computed on the tensor's own device, without copying the model anywhere: the tensor's
bytes are viewed as integer words (``int32`` for 4- and 8-byte elements, ``int16`` for 2-byte, ``uint8``
for 1-byte) and, in chunks of ``CHUNK_WORDS``, four position-weighted sums are accumulated::

    d0 = sum(w)                               mod 2**61 - 1
    d1 = sum((w mod P) * q1(p))               mod P,  P = 2**31 - 1,  q1(p) = p mod P + 1
    d2 = sum((w mod P) * q2(p))               mod P,  q2 = q1**2 mod P + 1
    d3 = sum((w**2 mod P) * q3(p))            mod P,  q3 = q1 * q2 mod P + 1

where ``w`` is the word at position ``p``. Every product and partial sum stays below 2**63, so the result
is exact integer arithmetic: the same bytes give the same digest on any device and in any reduction
order. A change of one element always changes ``d0``; reordered elements change ``d1``; an accidental
change that leaves all four sums equal has a chance of about 2**-93. It is not a cryptographic hash: to
guard against a deliberate collision, compare the values (``compare(model, checkpoint)``).

Digests stay on the device until the end; a snapshot makes one host transfer per device and no
host->device copy (the moduli are built with device ops; an in-memory tensor that is not contiguous is
flattened once, not once per window).

>>> import torch
>>> s = snapshot({"w": torch.ones(2, 3)})
>>> s.tensors["w"].shape, s.tensors["w"].dtype, len(s.tensors["w"].digest)
((2, 3), 'float32', 40)
>>> snapshot({"w": torch.ones(2, 3)}) == s
True
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from ..errors import InvalidArgumentError
from ..results.common import Env, fill_env, header, restore_env
from .sources import MemorySource, SnapshotSource, Source, TensorMeta, dtype_name, windows

SCHEMA = "runprof/1"
CHUNK_WORDS = 1 << 21
WINDOW_BYTES = 64 << 20
_P = 2**31 - 1
_M = 2**61 - 1


@dataclass(frozen=True)
class TensorFingerprint:
    """One tensor of a snapshot. ``digest`` is ``None`` when the values cannot be read (meta tensors)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    device: str
    numel: int
    digest: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "device": self.device,
                "numel": self.numel, "digest": self.digest}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorFingerprint:
        return cls(d["name"], tuple(d["shape"]), d["dtype"], d["device"], d["numel"], d["digest"])


@dataclass(frozen=True)
class Snapshot:
    """Fingerprints of every tensor of a model, state_dict or checkpoint, by name.

    >>> import torch
    >>> s = snapshot({"a": torch.zeros(4)})
    >>> Snapshot.from_dict(s.to_dict()) == s
    True
    """

    source: str
    tensors: Mapping[str, TensorFingerprint]
    env: Env | None = field(default=None, compare=False)  # versions, device, time: filled when made

    def __post_init__(self) -> None:
        fill_env(self, next((fp.device for fp in self.tensors.values()), "cpu"))

    def __len__(self) -> int:
        return len(self.tensors)

    def to_dict(self) -> dict[str, Any]:
        return {**header("snapshot", self.env), "source": self.source,
                "tensors": [fp.to_dict() for fp in self.tensors.values()]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Snapshot:
        fps = [TensorFingerprint.from_dict(t) for t in d["tensors"]]
        return restore_env(cls(d["source"], {fp.name: fp for fp in fps}), d)


def _words(chunk: torch.Tensor) -> torch.Tensor:
    """A 1-D chunk's bytes as integer words (never splits an element across two chunks)."""
    size = chunk.element_size()
    word = torch.int32 if size >= 4 else torch.int16 if size == 2 else torch.uint8
    if chunk.dtype == torch.bool:
        chunk = chunk.view(torch.uint8)
    return chunk.view(word)


def _partial(words: torch.Tensor, first: int) -> torch.Tensor:
    """``[d0, d1, d2, d3]`` of ``words`` at positions ``first, first + 1, ...`` (int64, on their device)."""
    w = words.to(torch.int64)
    q1 = torch.remainder(torch.arange(first, first + w.numel(), device=w.device, dtype=torch.int64), _P) + 1
    q2 = torch.remainder(q1 * q1, _P) + 1
    q3 = torch.remainder(q1 * q2, _P) + 1
    r = torch.remainder(w, _P)
    r2 = torch.remainder(w * w, _P)
    return torch.stack([
        torch.remainder(w.sum(), _M),
        torch.remainder(torch.remainder(r * q1, _P).sum(), _P),
        torch.remainder(torch.remainder(r * q2, _P).sum(), _P),
        torch.remainder(torch.remainder(r2 * q3, _P).sum(), _P),
    ])


def moduli(device: torch.device | str) -> torch.Tensor:
    """``[2**61 - 1, P, P, P]`` built on ``device`` with device ops (two fills and a cat): no host->device copy,
    so a snapshot of a CUDA model never blocks on a small ``torch.tensor([...], device=...)`` per tensor.

    >>> moduli("cpu").tolist() == [2**61 - 1, 2**31 - 1, 2**31 - 1, 2**31 - 1]
    True
    """
    return torch.cat([torch.full((1,), _M, dtype=torch.int64, device=device),
                      torch.full((3,), _P, dtype=torch.int64, device=device)])


def _reader(source: Source, name: str) -> tuple[Callable[[int, int], torch.Tensor], Callable[[], None]]:
    """``read(start, stop)`` and ``release()`` for one tensor. An in-memory tensor is flattened once (a copy
    only if it is not contiguous) and sliced for every window; other sources read and release per window."""
    if isinstance(source, MemorySource):
        flat = source.tensor(name).reshape(-1)
        return (lambda start, stop: flat[start:stop]), (lambda: None)
    return (lambda start, stop: source.read(name, start, stop - start)), source.release


def digest_tensor(source: Source, name: str, meta: TensorMeta,
                  mods: dict[torch.device, torch.Tensor] | None = None) -> torch.Tensor:
    """The four digest sums of ``name`` as an int64 tensor on the tensor's device (no host sync, no
    host->device copy). ``mods`` caches :func:`moduli` per device across the tensors of one snapshot."""
    mods = {} if mods is None else mods
    acc = None
    step = max(1, WINDOW_BYTES // max(1, meta.dtype.itemsize))
    read, release = _reader(source, name)
    for start, stop in windows(meta.numel, source.boundaries(name), step):
        words = _words(read(start, stop))
        per_elem = max(1, meta.dtype.itemsize // words.element_size())
        first = start * per_elem
        for i in range(0, words.numel(), CHUNK_WORDS):
            part = _partial(words[i:i + CHUNK_WORDS], first + i)
            if acc is None:
                acc = part
            else:
                if part.device not in mods:
                    mods[part.device] = moduli(part.device)
                acc = torch.remainder(acc + part, mods[part.device])
        release()
    if acc is None:  # an empty tensor
        acc = torch.zeros(4, dtype=torch.int64, device="meta" if meta.device == "meta" else meta.device)
    return acc


def _hex(sums: list[int]) -> str:
    return f"{sums[0]:016x}{sums[1]:08x}{sums[2]:08x}{sums[3]:08x}"


def fingerprint_source(source: Source) -> Snapshot:
    """A :class:`Snapshot` of every tensor of ``source``: digests on device, one transfer per device."""
    metas = source.metas()
    sums: dict[str, torch.Tensor] = {}
    shared: dict[tuple, torch.Tensor] = {}
    mods: dict[torch.device, torch.Tensor] = {}
    tensor_of = source.tensor if isinstance(source, MemorySource) else None
    for name, meta in metas.items():
        if not source.has_values(name):
            continue
        key = None
        if tensor_of is not None:  # tied weights appear under two names: digest the storage once
            t = tensor_of(name)
            key = (t.data_ptr(), t.dtype, tuple(t.shape), t.stride(), str(t.device))
            if key in shared:
                sums[name] = shared[key]
                continue
        sums[name] = digest_tensor(source, name, meta, mods)
        if key is not None:
            shared[key] = sums[name]
    by_device: dict[torch.device, list[str]] = {}
    for name, value in sums.items():
        by_device.setdefault(value.device, []).append(name)
    digests: dict[str, str] = {}
    for names in by_device.values():
        host = torch.stack([sums[n] for n in names]).cpu().tolist()  # the one transfer for this device
        digests.update({n: _hex(h) for n, h in zip(names, host)})
    fps = {
        n: TensorFingerprint(n, m.shape, dtype_name(m.dtype), m.device, m.numel,
                             digests.get(n) if source.has_values(n) else source.digest(n))
        for n, m in metas.items()
    }
    return Snapshot(source.label, fps)


def _label(obj: object) -> str:
    if isinstance(obj, torch.nn.Module):
        name = getattr(getattr(obj, "config", None), "_name_or_path", "") or ""
        return f"{type(obj).__name__}({name})" if name else type(obj).__name__
    return "state_dict"


def as_source(obj: object, *, what: str = "argument") -> Source:
    """A :class:`Source` for a Snapshot, a model, a ``{name: tensor}`` mapping or a checkpoint path."""
    if isinstance(obj, Snapshot):
        return SnapshotSource(obj)
    if isinstance(obj, Source):
        return obj
    if isinstance(obj, torch.nn.Module):
        return MemorySource(obj.state_dict(), label=_label(obj))
    if isinstance(obj, Mapping):
        bad = next(((k, v) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
        if bad is not None:
            raise InvalidArgumentError(
                f"{what}: a state_dict maps names to tensors; {bad[0]!r} maps to a {type(bad[1]).__name__}")
        return MemorySource(obj, label=_label(obj))
    if isinstance(obj, (str, os.PathLike)):
        from .checkpoints import open_checkpoint

        return open_checkpoint(obj)
    raise InvalidArgumentError(
        f"{what}: got a {type(obj).__name__}; expected a Snapshot, an nn.Module, a state_dict "
        "({name: tensor}) or a checkpoint path"
    )


def snapshot(model_or_state_dict: object) -> Snapshot:
    """Fingerprint every tensor of a model, state_dict or checkpoint path, on the tensors' own devices.

    >>> import torch
    >>> model = torch.nn.Linear(4, 2)
    >>> before = snapshot(model)
    >>> sorted(before.tensors)
    ['bias', 'weight']
    >>> from runprof.snapshots import compare
    >>> compare(before, snapshot(model)).identical
    True
    """
    source = as_source(model_or_state_dict, what="snapshot")
    if isinstance(source, SnapshotSource):
        return model_or_state_dict  # type: ignore[return-value]
    try:
        with torch.no_grad():
            return fingerprint_source(source)
    finally:
        source.close()
