"""Name mappings applied before matching: key prefixes, and per-expert (v4) to fused (v5) MoE experts.

A :class:`MappedSource` presents another source under new names; a mapped tensor is a concatenation of
flat segments of underlying tensors, so a fused expert tensor can be read straight from per-expert files.

The fused layout follows transformers 5.x's own conversion mapping for Mixtral
(``transformers/conversion_mapping.py``): ``.block_sparse_moe.`` is renamed ``.mlp.``;
``experts.gate_up_proj [E, 2I, H]`` is ``cat(stack(w1), stack(w3), dim=1)``, i.e. expert ``e``'s block
holds ``w1_e`` (gate) then ``w3_e`` (up); ``experts.down_proj [E, H, I]`` is ``stack(w2)``. The
Qwen2-MoE names ``gate_proj`` / ``up_proj`` / ``down_proj`` map the same way.

>>> import torch
>>> from .sources import MemorySource
>>> shapes = {"w1": (3, 2), "w3": (3, 2), "w2": (2, 3)}  # gate and up [I, H], down [H, I]
>>> sd = {f"m.block_sparse_moe.experts.{e}.{w}.weight": torch.full(s, 10.0 * e)
...       for e in range(2) for w, s in shapes.items()}
>>> src = MappedSource.build(MemorySource(sd, label="v4"), fuse_experts=True)
>>> src.metas()["m.mlp.experts.gate_up_proj"].shape
(2, 6, 2)
"""
from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping

import torch

from ..errors import InvalidArgumentError
from .sources import Source, TensorMeta

log = logging.getLogger("runprof")

_PER_EXPERT = re.compile(
    r"^(?P<pre>.*?)(?P<blk>block_sparse_moe|mlp)\.experts\.(?P<e>\d+)\."
    r"(?P<proj>w1|w2|w3|gate_proj|up_proj|down_proj)\.weight$"
)
_ROLES = {"w1": "gate", "w3": "up", "w2": "down", "gate_proj": "gate", "up_proj": "up", "down_proj": "down"}


@dataclass(frozen=True)
class Segment:
    """``count`` elements of underlying tensor ``name``, starting at flat offset 0."""

    name: str
    count: int


@dataclass(frozen=True)
class View:
    """A mapped tensor: its metadata and the underlying segments it concatenates (flat order)."""

    meta: TensorMeta
    segments: tuple[Segment, ...]


def strip_prefix(names: list[str], prefix: str | None, option: str) -> dict[str, str]:
    """``{new_name: old_name}`` with ``prefix`` removed where present; two names that collide are an error.

    >>> strip_prefix(["transformer.h.0.w", "lm_head.weight"], "transformer.", "base_prefix")
    {'h.0.w': 'transformer.h.0.w', 'lm_head.weight': 'lm_head.weight'}
    """
    out: dict[str, str] = {}
    for name in names:
        new = name[len(prefix):] if prefix and name.startswith(prefix) else name
        if new in out:
            raise InvalidArgumentError.bad(
                option, prefix, f"{out[new]!r} and {name!r} both become {new!r}; choose a prefix that only one of "
                "them carries")
        out[new] = name
    return out


class MappedSource(Source):
    """``inner`` under new names; see :meth:`build`."""

    def __init__(self, inner: Source, views: Mapping[str, View]) -> None:
        self.label = inner.label
        self.inner = inner
        self._views = dict(views)
        self._metas = {n: v.meta for n, v in self._views.items()}
        self._starts = {
            n: _cumulative(v.segments) for n, v in self._views.items() if len(v.segments) > 1
        }

    @classmethod
    def build(cls, inner: Source, *, prefix: str | None = None, option: str = "prefix",
              fuse_experts: bool = False) -> MappedSource:
        """Strip ``prefix`` from names, then (``fuse_experts``) present per-expert tensors as fused ones."""
        metas = inner.metas()
        renamed = strip_prefix(list(metas), prefix, option)
        views = {new: View(metas[old], (Segment(old, metas[old].numel),)) for new, old in renamed.items()}
        if fuse_experts:
            views = _fuse(views, inner)
        return cls(inner, views)

    def metas(self) -> Mapping[str, TensorMeta]:
        return self._metas

    def origin(self, name: str) -> str:
        segments = self._views[name].segments
        return self.inner.origin(segments[0].name) if len(segments) == 1 else name

    def has_values(self, name: str) -> bool:
        return all(self.inner.has_values(s.name) for s in self._views[name].segments)

    def boundaries(self, name: str) -> tuple[int, ...]:
        segments = self._views[name].segments
        if len(segments) == 1:
            return self.inner.boundaries(segments[0].name)
        return tuple(self._starts[name][1:])

    def read(self, name: str, start: int, count: int) -> torch.Tensor:
        segments = self._views[name].segments
        if len(segments) == 1:
            return self.inner.read(segments[0].name, start, count)
        starts = self._starts[name]
        i = next(i for i in range(len(segments)) if starts[i] <= start < starts[i + 1])
        if start + count > starts[i + 1]:
            raise ValueError(f"read of {name}[{start}:{start + count}] crosses a segment end at {starts[i + 1]}")
        return self.inner.read(segments[i].name, start - starts[i], count)

    def digest(self, name: str) -> str | None:
        segments = self._views[name].segments
        return self.inner.digest(segments[0].name) if len(segments) == 1 else None

    def release(self) -> None:
        self.inner.release()

    def close(self) -> None:
        self.inner.close()


def _cumulative(segments: tuple[Segment, ...]) -> list[int]:
    starts = [0]
    for s in segments:
        starts.append(starts[-1] + s.count)
    return starts


def _fuse(views: dict[str, View], inner: Source) -> dict[str, View]:
    """Replace complete per-expert groups by fused views; rename ``block_sparse_moe`` to ``mlp``."""
    groups: dict[str, dict[int, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
    for name in views:
        m = _PER_EXPERT.match(name)
        if m:
            groups[m["pre"] + m["blk"]][int(m["e"])][_ROLES[m["proj"]]] = name
    out = {n: v for n, v in views.items() if not _PER_EXPERT.match(n)}
    for block, experts in groups.items():
        fused = _fused_views(block, experts, views)
        if fused is None:
            out.update({n: views[n] for roles in experts.values() for n in roles.values()})
            continue
        if any(not inner.has_values(s.name) for v in fused.values() for s in v.segments):
            raise InvalidArgumentError(
                f"fuse_experts: {inner.label} holds only digests of {block}.experts.N (a snapshot); fusing needs "
                "the values: compare the model or the checkpoint itself"
            )
        out.update(fused)
    return {re.sub(r"(^|\.)block_sparse_moe\.", r"\1mlp.", n): v for n, v in out.items()}


def _fused_views(block: str, experts: dict[int, dict[str, str]], views: dict[str, View]) -> dict[str, View] | None:
    count = len(experts)
    if sorted(experts) != list(range(count)) or any(set(r) != {"gate", "up", "down"} for r in experts.values()):
        log.warning("fuse_experts: %s.experts is incomplete (experts %s, each needs gate/up/down): left as is",
                    block, sorted(experts))
        return None
    meta = {role: views[experts[0][role]].meta for role in ("gate", "up", "down")}
    same = all(views[experts[e][r]].meta == meta[r] for e in range(count) for r in meta)
    (i, h), (h2, i2) = meta["gate"].shape, meta["down"].shape
    if not same or meta["up"] != meta["gate"] or (h2, i2) != (h, i) or len({m.dtype for m in meta.values()}) > 1:
        log.warning("fuse_experts: %s.experts have unequal shapes or dtypes: left as is", block)
        return None
    base = block[: -len("block_sparse_moe")] + "mlp" if block.endswith("block_sparse_moe") else block
    dtype, device = meta["gate"].dtype, meta["gate"].device
    gate_up = tuple(Segment(experts[e][r], i * h) for e in range(count) for r in ("gate", "up"))
    down = tuple(Segment(experts[e]["down"], h * i) for e in range(count))
    return {
        f"{base}.experts.gate_up_proj": View(TensorMeta((count, 2 * i, h), dtype, device), gate_up),
        f"{base}.experts.down_proj": View(TensorMeta((count, h, i), dtype, device), down),
    }
