"""Text report of a :class:`~runprof.snapshots.Snapshot`: tensors, bytes per dtype, digests known."""
from __future__ import annotations

from collections import Counter

from ..snapshots.fingerprint import Snapshot
from ..snapshots.sources import dtype_from_name
from .format import human_bytes, n, table


def render_snapshot(s: Snapshot, *, max_rows: int = 20) -> str:
    """Source, tensor count, bytes per dtype, and the first ``max_rows`` tensors with their digests."""
    by_dtype: Counter[str] = Counter()
    for fp in s.tensors.values():
        by_dtype[fp.dtype] += fp.numel * _itemsize(fp.dtype)
    unknown = sum(1 for fp in s.tensors.values() if fp.digest is None)
    out = [f"snapshot of {s.source}: {n(len(s))} tensors, {human_bytes(sum(by_dtype.values()))}"
           + (f"; {n(unknown)} without values (meta tensors: no digest)" if unknown else "")]
    out += ["", table([[d, human_bytes(b), n(b)] for d, b in sorted(by_dtype.items())], ["dtype", "size", "bytes"],
                      ("left", "right", "right"))]
    rows = [[fp.name, "x".join(map(str, fp.shape)), fp.dtype, fp.device, fp.digest or "-"]
            for fp in list(s.tensors.values())[:max_rows]]
    out += ["", table(rows, ["tensor", "shape", "dtype", "device", "digest"])]
    if len(s) > max_rows:
        out.append(f"(first {max_rows} of {n(len(s))} tensors shown)")
    return "\n".join(out)


def _itemsize(dtype: str) -> int:
    try:
        return dtype_from_name(dtype).itemsize
    except ValueError:
        return 0


__all__ = ["render_snapshot"]
