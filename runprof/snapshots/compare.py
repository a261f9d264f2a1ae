"""``compare(a, b)``: what differs between two models, state_dicts, snapshots or checkpoints.

Names are matched after the prefix and expert mappings (:mod:`.mapping`); each pair is then classified
as a shape, dtype or value mismatch. Values are compared window by window (:mod:`.diffing`) when both
sides hold them, by digest when one side is a :class:`~runprof.snapshots.fingerprint.Snapshot`.
A tensor on one side only is a difference unless it is a known recomputable buffer (``RECOMPUTABLE``,
e.g. ``rotary_emb.inv_freq``) or a tied ``lm_head.weight`` equal to the other side's embedding; those
are listed in ``recomputable``. Tensors matching ``ignore`` are listed in ``ignored`` and not compared.

One equality rule for every kind of input: **bitwise unless a tolerance is given** (``-0.0`` and ``+0.0``
differ, as do NaNs with different payloads, whether values or digests are compared); with ``rtol``/``atol``
values are compared numerically (see :mod:`.diffing`), which needs values on both sides. The result's
``verdict`` is ``"identical"`` only when every value was compared; tensors whose values cannot be read
(meta, sparse) make it ``"not_proven"``.

>>> import torch
>>> a = {"w": torch.zeros(3), "b": torch.ones(2)}
>>> r = compare(a, {"w": torch.tensor([0.0, 0.25, 0.0])})
>>> [e.name for e in r.only_in_base], r.value_mismatch[0].max_abs_diff, r.identical
(['b'], 0.25, False)
"""
from __future__ import annotations

import logging
import math
import re
from typing import Callable, Iterable

import torch

from ..errors import InvalidArgumentError
from .diffing import diff_pair
from .fingerprint import as_source, fingerprint_source
from .mapping import MappedSource
from .result import (
    CompareResult,
    CompareTotals,
    DtypeMismatch,
    ExpertDiff,
    ShapeMismatch,
    SkippedTensor,
    TensorEntry,
    ValueMismatch,
)
from .sources import SnapshotSource, Source, dtype_name

log = logging.getLogger("runprof")

RECOMPUTABLE = re.compile(
    r"(^|\.)(rotary_emb\.\w+|inv_freq|original_inv_freq|cos_cached|sin_cached|position_ids|masked_bias)$"
)
"""Buffers a model recomputes at load time: present on one side only, they are not differences."""
_TIED_HEAD = re.compile(r"(^|\.)lm_head\.weight$")
_EMBEDDING = re.compile(r"(^|\.)(embed_tokens|wte|word_embeddings|embed_in|tok_embeddings|shared)\.weight$")

Progress = Callable[[int, int], None]


def natural_key(name: str) -> list[int | str]:
    """Sort key that puts ``layers.2`` before ``layers.10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _pattern(ignore: str | re.Pattern[str] | Iterable[str] | None) -> re.Pattern[str] | None:
    if ignore is None or isinstance(ignore, re.Pattern):
        return ignore
    parts = [ignore] if isinstance(ignore, str) else list(ignore)
    text = parts[0] if len(parts) == 1 else "|".join(f"(?:{p})" for p in parts)
    try:
        return re.compile(text)
    except re.error as e:
        raise InvalidArgumentError.bad("ignore", text, f"not a regular expression ({e}); escape dots as \\.") from e


def _check_options(rtol: float, atol: float, device: torch.device | str | None) -> torch.device | None:
    for option, value in (("rtol", rtol), ("atol", atol)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InvalidArgumentError.bad(option, value, "must be a finite number >= 0 (0 compares exactly)")
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidArgumentError(f"device {device!r}: not a torch device; use cpu or cuda") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(
            f"device {device!r}: CUDA is not available here (torch.cuda.is_available() is False); use cpu"
        )
    return dev


class _Comparison:
    """One comparison run: two mapped sources and the options; :meth:`run` builds the result."""

    def __init__(self, a: MappedSource, b: MappedSource, *, rtol: float, atol: float,
                 ignore: re.Pattern[str] | None, device: torch.device | None, progress: Progress | None) -> None:
        self.a, self.b = a, b
        self.rtol, self.atol, self.device, self.ignore, self.progress = rtol, atol, device, ignore, progress
        self.bytes_read = 0
        self.equal = 0
        self.unknown = 0

    def _ignored(self, src: Source, name: str) -> bool:
        return self.ignore is not None and bool(self.ignore.search(name) or self.ignore.search(src.origin(name)))

    def run(self) -> CompareResult:
        names_a, names_b = set(self.a.metas()), set(self.b.metas())
        skip_a = {n for n in names_a if self._ignored(self.a, n)}
        skip_b = {n for n in names_b if self._ignored(self.b, n)}
        ignored = [
            SkippedTensor(n, "both" if n in skip_a and n in skip_b else "base" if n in skip_a else "target",
                          f"matches --ignore {self.ignore.pattern}" if self.ignore else "")
            for n in sorted(skip_a | skip_b, key=natural_key)
        ]
        names_a, names_b = names_a - skip_a, names_b - skip_b
        recomputable: list[SkippedTensor] = []
        only_a = self._one_sided(sorted(names_a - names_b, key=natural_key), "base", recomputable)
        only_b = self._one_sided(sorted(names_b - names_a, key=natural_key), "target", recomputable)
        shapes, dtypes, values = self._pairs(sorted(names_a & names_b, key=natural_key))
        totals = CompareTotals(
            base_tensors=len(self.a.metas()), target_tensors=len(self.b.metas()),
            compared=len(names_a & names_b), equal=self.equal, values_unknown=self.unknown,
            base_bytes=sum(m.nbytes for m in self.a.metas().values()),
            target_bytes=sum(m.nbytes for m in self.b.metas().values()), compared_bytes=self.bytes_read,
        )
        return CompareResult(
            base=self.a.label, target=self.b.label, rtol=float(self.rtol), atol=float(self.atol),
            only_in_base=tuple(only_a), only_in_target=tuple(only_b), shape_mismatch=tuple(shapes),
            dtype_mismatch=tuple(dtypes), value_mismatch=tuple(values), recomputable=tuple(recomputable),
            ignored=tuple(ignored), totals=totals,
        )

    def _one_sided(self, names: list[str], side: str, recomputable: list[SkippedTensor]) -> list[TensorEntry]:
        src, other = (self.a, self.b) if side == "base" else (self.b, self.a)
        entries = []
        for name in names:
            reason = "recomputable buffer" if RECOMPUTABLE.search(name) else self._tied(name, src, other)
            if reason:
                log.info("%s only in the %s model: %s, not a difference", name, side, reason)
                recomputable.append(SkippedTensor(src.origin(name), side, reason))
            else:
                meta = src.metas()[name]
                entries.append(TensorEntry(src.origin(name), meta.shape, dtype_name(meta.dtype)))
        return entries

    def _tied(self, name: str, src: Source, other: Source) -> str | None:
        """A reason when ``name`` is a tied head equal to an embedding (the other side's, else its own)."""
        if not _TIED_HEAD.search(name):
            return None
        meta = src.metas()[name]
        for side, where in ((other, "other"), (src, "same")):
            for emb, emb_meta in side.metas().items():
                if _EMBEDDING.search(emb) and emb_meta.shape == meta.shape and emb_meta.dtype == meta.dtype:
                    if self._same_values(src, name, side, emb):
                        return f"tied: equal to {emb} in the {where} model"
        return None

    def _same_values(self, x: Source, xn: str, y: Source, yn: str) -> bool:
        if x.has_values(xn) and y.has_values(yn):
            return diff_pair(x, xn, y, yn, rtol=self.rtol, atol=self.atol, device=self.device).differing == 0
        dx, dy = x.digest(xn), y.digest(yn)
        return dx is not None and dx == dy

    def _pairs(self, names: list[str]) -> tuple[list[ShapeMismatch], list[DtypeMismatch], list[ValueMismatch]]:
        shapes: list[ShapeMismatch] = []
        dtypes: list[DtypeMismatch] = []
        values: list[ValueMismatch] = []
        for done, name in enumerate(names):
            if self.progress is not None:
                self.progress(done, len(names))
            ma, mb = self.a.metas()[name], self.b.metas()[name]
            da, db = dtype_name(ma.dtype), dtype_name(mb.dtype)
            if ma.shape != mb.shape:
                shapes.append(ShapeMismatch(name, ma.shape, mb.shape, da, db))
            elif da != db:
                count = biggest = None
                if self.a.has_values(name) and self.b.has_values(name):
                    count, biggest, _ = self._values(name)
                dtypes.append(DtypeMismatch(name, ma.shape, da, db, biggest, count))
            else:
                outcome = self._values(name)
                if outcome is None:
                    self.unknown += 1
                elif outcome[0] == 0:
                    self.equal += 1
                else:
                    values.append(ValueMismatch(name, ma.shape, da, outcome[1], outcome[0], outcome[2]))
        if self.progress is not None:
            self.progress(len(names), len(names))
        return shapes, dtypes, values

    def _values(self, name: str) -> tuple[int | None, float | None, tuple[ExpertDiff, ...]] | None:
        """(differing elements, max abs diff, differing experts); counts are None when only digests differ,
        and the whole is None when neither values nor digests are at hand (meta tensors)."""
        if self.a.has_values(name) and self.b.has_values(name):
            s = diff_pair(self.a, name, self.b, name, rtol=self.rtol, atol=self.atol, device=self.device)
            self.bytes_read += s.bytes_read
            experts = tuple(ExpertDiff(e, m, n) for e, (n, m) in sorted(s.experts.items()))
            return s.differing, s.max_abs_diff, experts
        da, db = self.a.digest(name), self.b.digest(name)
        if da is None or db is None:
            return None
        return (0, 0.0, ()) if da == db else (None, None, ())


def _check_tolerance_sources(a: Source, b: Source, rtol: float, atol: float) -> None:
    if (rtol or atol) and (isinstance(a, SnapshotSource) or isinstance(b, SnapshotSource)):
        which = "base" if isinstance(a, SnapshotSource) else "target"
        raise InvalidArgumentError(
            f"rtol {rtol:g} / atol {atol:g}: the {which} is a Snapshot, which holds digests of the bytes, not values; "
            "compare without a tolerance (bitwise), or pass the model, state_dict or checkpoint itself"
        )


def _digested(source: Source) -> SnapshotSource:
    try:
        with torch.no_grad():
            return SnapshotSource(fingerprint_source(source))
    finally:
        source.close()


def compare(a: object, b: object, *, rtol: float = 0.0, atol: float = 0.0, base_prefix: str | None = None,
            target_prefix: str | None = None, ignore: str | re.Pattern[str] | Iterable[str] | None = None,
            fuse_experts: bool = False, device: torch.device | str | None = None,
            progress: Progress | None = None) -> CompareResult:
    """Compare ``a`` (base) with ``b`` (target): Snapshots, models, state_dicts or checkpoint paths.

    ``base_prefix``/``target_prefix`` are stripped from names that carry them; ``ignore`` (a regex,
    searched in each name) skips tensors; ``fuse_experts`` presents per-expert MoE tensors (v4 layout)
    as transformers 5's fused ones; ``device`` moves the windows of values there (default: where the base
    tensor lives); ``progress(done, total)`` is called per tensor pair. Checkpoints are streamed.
    Without a tolerance, equality is bitwise for every input (``-0.0 != +0.0``; NaNs equal only with equal
    payloads); with ``rtol``/``atol`` an element differs when ``|t - b| > atol + rtol * |b|`` (NaN equals
    NaN). When one side is a Snapshot, the other is digested and digests are compared: any change of bytes
    is a value mismatch, reported without a max abs diff; a tolerance is refused there (a snapshot holds no
    values). ``result.verdict`` is ``"identical"``, ``"different"`` or ``"not_proven"`` (nothing differs,
    but some values could not be read: meta or sparse tensors).

    >>> import torch
    >>> base = {"transformer.w": torch.ones(2), "rotary_emb.inv_freq": torch.ones(1)}
    >>> r = compare(base, {"w": torch.ones(2)}, base_prefix="transformer.")
    >>> r.identical, [s.name for s in r.recomputable]
    (True, ['rotary_emb.inv_freq'])
    """
    dev = _check_options(rtol, atol, device)
    pattern = _pattern(ignore)
    src_a = as_source(a, what="base")
    src_b = None
    try:
        src_b = as_source(b, what="target")
        _check_tolerance_sources(src_a, src_b, rtol, atol)
        if isinstance(src_a, SnapshotSource) != isinstance(src_b, SnapshotSource):
            # only digests on one side: digest the other side once (one host transfer), then compare digests
            if isinstance(src_a, SnapshotSource):
                src_b = _digested(src_b)
            else:
                src_a = _digested(src_a)
        mapped_a = MappedSource.build(src_a, prefix=base_prefix, option="base_prefix", fuse_experts=fuse_experts)
        mapped_b = MappedSource.build(src_b, prefix=target_prefix, option="target_prefix", fuse_experts=fuse_experts)
        with torch.no_grad():
            return _Comparison(mapped_a, mapped_b, rtol=rtol, atol=atol, ignore=pattern, device=dev,
                               progress=progress).run()
    finally:
        src_a.close()
        if src_b is not None:
            src_b.close()
