"""Number formatting and tables shared by every text renderer (the only place numbers become strings)."""
from __future__ import annotations

from typing import Any

from tabulate import tabulate

_FMT = "simple"


def n(x: int | float | None) -> str:
    """Thousands-separated integer, or a float with 3 decimals; ``None`` as ``-``.

    >>> n(12879925248), n(2.5), n(None)
    ('12,879,925,248', '2.500', '-')
    """
    if x is None:
        return "-"
    if isinstance(x, float) and not x.is_integer():
        return f"{x:,.3f}"
    return f"{int(x):,}"


def human(x: int | float | None, unit: str = "") -> str:
    """3 significant figures with K/M/B/T (``46.7B``); for bytes use :func:`human_bytes`.

    >>> human(46702792704)
    '46.7B'
    """
    if x is None:
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}{unit}"
    return f"{x:g}{unit}"


def human_bytes(x: int | float | None) -> str:
    """Bytes in GiB/MiB/KiB (binary units).

    >>> human_bytes(3 * 2**30), human_bytes(512)
    ('3.00 GiB', '512 B')
    """
    if x is None:
        return "-"
    for scale, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {suffix}"
    return f"{int(x)} B"


def pct(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole`` with 2 decimals (``-`` when ``whole`` is 0)."""
    return f"{100.0 * part / whole:.2f}%" if whole else "-"


def table(rows: list[list[Any]], headers: list[str], align: tuple[str, ...] | None = None) -> str:
    """A plain text table (tabulate's ``simple`` format, numbers kept as the strings given)."""
    return tabulate(rows, headers=headers, tablefmt=_FMT, colalign=align, disable_numparse=True)


__all__ = ["human", "human_bytes", "n", "pct", "table"]
