"""Renderers: text tables, JSON and plots. The only place numbers become strings.

One contract for every result: :func:`render` takes any result runprof returns (or :func:`runprof.load_result`
reads back) and returns its report as a string, the same text the command that made it printed.
"""
from __future__ import annotations

from typing import Any


def render(result: Any, format: str = "text", **options: Any) -> str:  # noqa: A002 - the public keyword is "format"
    """The report of ``result`` (a run, count, compare, bench or snapshot result); ``format="html"`` gives a
    self-contained HTML page of a run or bench result (:mod:`runprof.renderers.html`).

    Text options: ``width`` (columns to fit; the terminal's by default, ``COLUMNS`` honoured) for run, bench
    and count reports; ``full=True`` (every detail section after the summary) for runs and benches;
    ``show=[...]`` (named sections of a run: :data:`runprof.renderers.run_report.SECTIONS`).

    >>> import runprof
    >>> print(runprof.render(runprof.count_params("mixtral")).splitlines()[1])
    total parameters: 46,702,792,704 (46.7B)
    """
    from ..errors import InvalidArgumentError

    if format == "html":
        from .html import render_html

        return render_html(result)
    if format != "text":
        raise InvalidArgumentError(f"render(format={format!r}): the formats are 'text' and 'html'")
    for cls, fn, accepted in _renderers():
        if isinstance(result, cls):
            unknown = sorted(set(options) - set(accepted))
            if unknown:
                raise InvalidArgumentError(f"render({unknown[0]}=...): a {cls.__name__} report takes "
                                           f"{', '.join(accepted) or 'no options'}")
            return fn(result, **options)
    raise InvalidArgumentError(
        f"render() takes a runprof result (run, count, compare, bench, snapshot), not {type(result).__name__}")


def _renderers() -> list[tuple[type, Any, tuple[str, ...]]]:
    from ..results import CountResult, TrackResult
    from ..routing.bench import BenchResult
    from ..snapshots.fingerprint import Snapshot
    from ..snapshots.result import CompareResult
    from .bench_report import render_bench
    from .compare_report import render_compare
    from .count_report import render_count
    from .run_report import render_track
    from .snapshot_report import render_snapshot

    return [(TrackResult, render_track, ("full", "show", "width")), (CountResult, render_count, ("width", "layers")),
            (CompareResult, render_compare, ()), (BenchResult, render_bench, ("full", "width")),
            (Snapshot, render_snapshot, ())]


__all__ = ["render"]
