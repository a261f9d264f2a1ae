"""Building blocks of the HTML report: escaped text, tables, sections and the page around them."""
from __future__ import annotations

import html
from typing import Any, Iterable, Sequence


def esc(x: Any) -> str:
    """``x`` as HTML text (quotes escaped too, so it is safe inside attributes)."""
    return html.escape(str(x), quote=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, left: Iterable[int] = (0,),
          caption: str | None = None) -> str:
    """An HTML table; cells are escaped text, columns in ``left`` are left-aligned (the rest right)."""
    left = set(left)
    head = "".join(f'<th{" class=l" if i in left else ""} scope="col">{esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td{" class=l" if i in left else ""}>{esc(c)}</td>' for i, c in enumerate(row))
                   + "</tr>" for row in rows)
    cap = f"<caption class=note>{esc(caption)}</caption>" if caption else ""
    return f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def kv_table(items: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of (what, value) rows."""
    return table(["", "value"], [(k, v) for k, v in items], left=(0, 1))


def section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{esc(anchor)}" aria-labelledby="h-{esc(anchor)}"><h2 id="h-{esc(anchor)}">{esc(title)}</h2>' \
           + "".join(parts) + "</section>"


def note(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{esc(text)}</p>'


def page(title: str, facts: Sequence[str], sections: Sequence[tuple[str, str, str]], *, css: str = "",
         script: str = "") -> str:
    """The whole document: a header with ``facts`` lines, a table of contents, and ``(anchor, title, html)``
    sections."""
    from .html_assets import CSS

    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(html_ for _, _, html_ in sections)
    lines = "".join(f'<p class="facts">{esc(f)}</p>' for f in facts)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}{css}</style></head><body>"
            f"<header><h1>{esc(title)}</h1>{lines}<nav aria-label=\"sections\">{nav}</nav></header>"
            f"<main>{body}</main><footer>{note('made by runprof; self-contained: opening it reaches no network')}"
            f"</footer>{script}</body></html>\n")


__all__ = ["esc", "kv_table", "note", "page", "section", "table"]
