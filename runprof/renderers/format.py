"""Number formatting and tables shared by every text renderer (the only place numbers become strings).

Tables and prose fit a width when one is given: :func:`terminal_width` is the terminal's (``COLUMNS``
honoured, 80 when unknown); :func:`table` wraps its prose columns at word boundaries (identifiers at dots)
until the table fits, and :func:`wrap` wraps a line of prose with a hanging indent.
"""
from __future__ import annotations

import re
import shutil
import textwrap
from typing import Any, Sequence

from tabulate import tabulate

_FMT = "simple"
MIN_WRAP = 16
"""A wrapped column is never made narrower than this (a table that cannot fit then stays wider)."""


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


def seconds(x: float | None) -> str:
    """A duration with a unit that keeps 3 significant figures (``62.3 ms``, ``1.25 s``, ``85 µs``).

    >>> seconds(0.0623), seconds(1.25), seconds(8.5e-05), seconds(None)
    ('62.3 ms', '1.25 s', '85 µs', '-')
    """
    if x is None:
        return "-"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}" if x / scale < 100 else f"{x / scale:.0f} {unit}"
    return f"{x * 1e9:.0f} ns"


def rate(x: float | None) -> str:
    """A rate (tokens/s) with 3 significant figures, thousands separated (``141``, ``3,110``).

    >>> rate(141.49), rate(3113.39), rate(2.345), rate(None)
    ('141', '3,110', '2.35', '-')
    """
    if x is None:
        return "-"
    if x >= 100:
        digits = len(str(int(x)))
        return f"{round(x, 3 - digits):,.0f}"
    return f"{x:.3g}"


def pct(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole`` with 2 decimals (``-`` when ``whole`` is 0)."""
    return f"{100.0 * part / whole:.2f}%" if whole else "-"


def terminal_width(default: int = 80) -> int:
    """The width reports fit: ``COLUMNS`` when set, else the terminal's, else ``default``."""
    return shutil.get_terminal_size((default, 24)).columns


_UNIT = re.compile(r"(?<=\d) (?=(?:tokens/s|tokens|ms|s|µs|ns|B|KiB|MiB|GiB|TiB|kB|MB|GB|TB|[kMGTP]?FLOP/s|"
                   r"[kMGTP]?B/s)(?![\w/]))")
_KEEP = "\x00"  # stands for a space that must not break while textwrap runs (textwrap breaks only at whitespace)


def wrap(text: str, width: int | None, indent: str = "  ") -> list[str]:
    """``text`` as lines of at most ``width`` characters, broken at spaces (later lines indented), never
    between a number and its unit; one line when ``width`` is None.

    >>> wrap("tokens: prompt 194, generated 32", 20)
    ['tokens: prompt 194,', '  generated 32']
    >>> wrap("decode 167 tokens/s, prefill 3,880 tokens/s", 30)
    ['decode 167 tokens/s, prefill', '  3,880 tokens/s']
    """
    if width is None or len(text) <= width:
        return [text]
    lines = textwrap.wrap(_UNIT.sub(_KEEP, text), width, subsequent_indent=indent, break_long_words=False,
                          break_on_hyphens=False)
    return [line.replace(_KEEP, " ") for line in lines] or [text]


def wrap_cell(text: str, width: int) -> str:
    """One table cell in lines of at most ``width``: prose at spaces, a dotted identifier after its dots.

    >>> print(wrap_cell("model.layers.n.mlp.experts.down_proj", 20))
    model.layers.n.mlp.
    experts.down_proj
    """
    out: list[str] = []
    for line in str(text).split("\n"):
        if len(line) <= width:
            out.append(line)
        elif " " in line:
            out += textwrap.wrap(line, width, break_on_hyphens=False)
        else:
            out += _wrap_dotted(line, width)
    return "\n".join(out)


def _wrap_dotted(word: str, width: int) -> list[str]:
    lines, current = [], ""
    for part in [p + "." for p in word.split(".")[:-1]] + [word.split(".")[-1]]:
        if current and len(current) + len(part) > width:
            lines.append(current)
            current = ""
        current += part
    lines.append(current)
    return [piece[i:i + width] for piece in lines for i in range(0, max(len(piece), 1), width)]


def _render(rows: list[list[Any]], headers: Sequence[str], align: tuple[str, ...] | None) -> str:
    return tabulate(rows, headers=list(headers), tablefmt=_FMT, colalign=align, disable_numparse=True)


def table(rows: list[list[Any]], headers: Sequence[str], align: tuple[str, ...] | None = None, *,
          width: int | None = None, wrap_cols: Sequence[int] = (-1,)) -> str:
    """A plain text table (tabulate's ``simple`` format, numbers kept as the strings given).

    With ``width``, the columns in ``wrap_cols`` (the last one by default) are wrapped, the widest first, until
    every line fits (none narrower than :data:`MIN_WRAP`); without it the table is as wide as its cells.

    >>> print(table([["weights", "Σ numel x element size of unique resident parameters"]], ["row", "note"],
    ...             width=40))
    row      note
    -------  --------------------------
    weights  Σ numel x element size of
             unique resident parameters
    """
    text = _render(rows, headers, align)
    if width is None or not rows or _widest(text) <= width:
        return text
    ncols = len(headers)
    cols = sorted({c % ncols for c in wrap_cols})
    original, targets = rows, {}
    for _ in range(2 * len(cols) + 2):  # each pass narrows the widest wrappable column by what is still too wide
        excess = _widest(text) - width
        widths = {c: max(len(line) for cell in [headers[c], *(r[c] for r in rows)] for line in str(cell).split("\n"))
                  for c in cols}
        c = max(cols, key=lambda i: widths[i])
        if excess <= 0 or widths[c] <= MIN_WRAP:
            break
        others = sorted((widths[i] for i in cols if i != c), reverse=True)
        second = others[0] if others else 0
        # narrow the widest column to the next widest first, so that prose columns share the cut
        target = max(MIN_WRAP, widths[c] - excess, second) if second < widths[c] else \
            max(MIN_WRAP, widths[c] - -(-excess // 2))
        targets[c] = target
        rows = [[wrap_cell(cell, targets[i]) if i in targets else cell for i, cell in enumerate(r)] for r in original]
        text = _render(rows, headers, align)
    return text


def _widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


__all__ = ["MIN_WRAP", "human", "human_bytes", "n", "pct", "rate", "seconds", "table", "terminal_width", "wrap",
           "wrap_cell"]
