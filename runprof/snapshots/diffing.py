"""Value comparison of one tensor pair, window by window, with bounded memory.

Each window (at most ``WINDOW_BYTES`` of either side, never crossing a segment or expert boundary) is
first compared byte for byte: ``memcmp`` on the CPU (``torch.equal`` runs at a fraction of memory
bandwidth there), ``torch.equal`` on integer views elsewhere. Only the chunks of ``CHUNK_ELEMS`` whose
bytes differ (all chunks when the dtypes differ) are examined element by element.

The equality rule, the same for every input (tensors, checkpoints, and the digests of snapshots):

- **exact (``rtol = atol = 0``, the default): bitwise.** An element differs when its bytes differ, so
  ``-0.0`` differs from ``+0.0`` and two NaNs with different payloads differ (each with an absolute
  difference of 0); a snapshot's digest, which is computed from the bytes, agrees.
- **with a tolerance: numeric.** An element differs when ``|t - b| > atol + rtol * |b|``; ``-0.0`` equals
  ``+0.0`` and NaN equals NaN. Snapshots hold no values, so a tolerance with a snapshot is refused.

Absolute differences are computed in float32 (exact for every float of 32 bits or less; float64 for
float64, int64 for integers, complex128 for complex); a NaN or inf facing a different value is an
infinite difference. Tensors of different dtypes are compared numerically after promotion.

>>> import torch
>>> from .sources import MemorySource
>>> a = MemorySource({"w": torch.zeros(4)}, label="a")
>>> b = MemorySource({"w": torch.tensor([0.0, 0.5, 0.0, 0.0])}, label="b")
>>> s = diff_pair(a, "w", b, "w")
>>> s.differing, s.max_abs_diff
(1, 0.5)
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import re
from dataclasses import dataclass, field
from typing import Callable

import torch

from .sources import Source, TensorMeta, windows

WINDOW_BYTES = 64 << 20
CHUNK_ELEMS = 1 << 18
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_EXPERTS = re.compile(r"(^|\.)experts\.[A-Za-z_]\w*$")


@dataclass
class PairStats:
    """What :func:`diff_pair` found; ``experts`` maps an expert index to (differing, max abs diff)."""

    differing: int = 0
    max_abs_diff: float = 0.0
    bytes_read: int = 0
    experts: dict[int, tuple[int, float]] = field(default_factory=dict)


def expert_rows(name: str, meta: TensorMeta) -> int | None:
    """Number of experts along dim 0 when ``name`` is a fused expert tensor (``...experts.gate_up_proj``).

    >>> expert_rows("model.layers.0.mlp.experts.down_proj", TensorMeta((8, 4, 2), torch.float32))
    8
    >>> expert_rows("model.layers.0.mlp.experts.3.w1.weight", TensorMeta((4, 2), torch.float32)) is None
    True
    """
    if len(meta.shape) >= 2 and meta.shape[0] > 0 and _EXPERTS.search(name):
        return meta.shape[0]
    return None


@functools.lru_cache(maxsize=1)
def _memcmp() -> Callable[[int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or None).memcmp
    except (OSError, AttributeError, TypeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return fn


def bytes_equal(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether two 1-D tensors of one dtype hold the same bytes (so NaN payloads match too)."""
    if x.numel() != y.numel():
        return False
    n = x.numel() * x.element_size()
    fn = _memcmp()
    if fn is not None and x.device.type == y.device.type == "cpu" and x.is_contiguous() and y.is_contiguous():
        return n == 0 or fn(x.data_ptr(), y.data_ptr(), n) == 0
    view = _INT_VIEW.get(x.element_size())
    if view is None:  # complex128: 16-byte elements
        view, x, y = torch.int64, x.view(torch.uint8), y.view(torch.uint8)
    return torch.equal(x.view(view) if x.dtype != torch.bool else x, y.view(view) if y.dtype != torch.bool else y)


def _compute_dtype(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    """float32 for 8- to 32-bit floats (exact for the conversion), float64, int64 or complex128 otherwise."""
    dt = torch.promote_types(a, b)
    if dt.is_complex:
        return torch.complex128
    if dt.is_floating_point:
        return torch.float64 if dt == torch.float64 else torch.float32
    return torch.int64


def bits_differ(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per element of two equal-length 1-D chunks of one dtype: whether their bytes differ.

    >>> bits_differ(torch.tensor([0.0, 1.0]), torch.tensor([-0.0, 1.0])).tolist()
    [True, False]
    """
    if x.dtype == torch.bool:
        return x != y
    view = _INT_VIEW.get(x.element_size())
    if view is None:  # complex128: two 8-byte words per element
        return (x.view(torch.int64).view(-1, 2) != y.view(torch.int64).view(-1, 2)).any(dim=1)
    return x.view(view) != y.view(view)


def chunk_stats(x: torch.Tensor, y: torch.Tensor, rtol: float, atol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(differing count, max abs diff) of two equal-length 1-D chunks, as 0-d tensors on their device; the
    equality rule is the module docstring's (bitwise without a tolerance, numeric with one)."""
    dt = _compute_dtype(x.dtype, y.dtype)
    xc, yc = x.to(dt), y.to(dt)
    diff = (yc - xc).abs()
    if dt.is_floating_point or dt.is_complex:
        diff = diff.to(torch.float64) if dt.is_complex else diff
        undefined = diff.isnan()  # NaN meets anything, or inf meets inf
        if bool(undefined.any()):
            same = (xc == yc) | (xc.isnan() & yc.isnan())
            diff = torch.where(undefined & same, 0.0, diff).nan_to_num(nan=math.inf, posinf=math.inf)
    if rtol == 0 and atol == 0:
        bad = bits_differ(x, y) if x.dtype == y.dtype else diff != 0
    else:
        bad = diff > atol + rtol * xc.abs().to(diff.dtype)
    return bad.sum(), diff.max().to(torch.float64)


def diff_pair(a: Source, a_name: str, b: Source, b_name: str, *, rtol: float = 0.0, atol: float = 0.0,
              device: torch.device | str | None = None) -> PairStats:
    """Compare ``a[a_name]`` with ``b[b_name]`` (same shape) window by window; see the module docstring."""
    meta_a, meta_b = a.metas()[a_name], b.metas()[b_name]
    numel = meta_a.numel
    rows = expert_rows(b_name, meta_b)
    per_expert = numel // rows if rows else 0
    cuts = set(a.boundaries(a_name)) | set(b.boundaries(b_name))
    cuts |= {e * per_expert for e in range(1, rows or 0)}
    step = max(1, WINDOW_BYTES // max(meta_a.dtype.itemsize, meta_b.dtype.itemsize))
    same_dtype = meta_a.dtype == meta_b.dtype
    stats = PairStats()
    pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    for start, stop in windows(numel, cuts, step):
        x, y = a.read(a_name, start, stop - start), b.read(b_name, start, stop - start)
        target = torch.device(device) if device is not None else x.device
        x, y = x.to(target), y.to(target)
        stats.bytes_read += x.numel() * x.element_size() + y.numel() * y.element_size()
        if not (same_dtype and bytes_equal(x, y)):
            for i in range(0, x.numel(), CHUNK_ELEMS):
                xs, ys = x[i:i + CHUNK_ELEMS], y[i:i + CHUNK_ELEMS]
                if same_dtype and bytes_equal(xs, ys):  # a changed element leaves most chunks equal
                    continue
                count, biggest = chunk_stats(xs, ys, rtol, atol)
                pending.append((start // per_expert if per_expert else -1, count, biggest))
        del x, y
        a.release()
        b.release()
    return _collect(stats, pending)


def _collect(stats: PairStats, pending: list[tuple[int, torch.Tensor, torch.Tensor]]) -> PairStats:
    """Bring the per-chunk counts to the host in one transfer and fold them per expert."""
    if not pending:
        return stats
    counts = torch.stack([c for _, c, _ in pending]).tolist()
    maxima = torch.stack([m for _, _, m in pending]).tolist()
    for (expert, _, _), count, biggest in zip(pending, counts, maxima):
        stats.differing += count
        stats.max_abs_diff = max(stats.max_abs_diff, biggest)
        if expert >= 0 and count:
            n, m = stats.experts.get(expert, (0, 0.0))
            stats.experts[expert] = (n + count, max(m, biggest))
    return stats
