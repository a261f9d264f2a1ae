"""Progress on stderr for long work that reports no steps of its own (building a model with random weights):
the elapsed time, redrawn in place on a terminal; one plain status line when stderr is not a terminal (never
``\\r`` frames in a redirected log)."""
from __future__ import annotations

import sys
import threading
from typing import Any

from .common import say


class Activity:
    """``start(desc)`` shows ``desc: 0:12`` (elapsed) until ``close()``; a context manager.

    >>> with Activity() as a:  # stderr is not a terminal under doctest: one status line
    ...     a.start("building")
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.bar: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, desc: str, *, live: bool = True) -> None:
        """Show ``desc``; ``live=False`` (work that draws its own bar) prints the status line only."""
        if self.bar is not None:
            self.bar.set_description_str(desc)
            return
        if not live or not sys.stderr.isatty():
            say(desc + " ...")
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(desc=desc, total=None, bar_format="{desc}: {elapsed}", file=sys.stderr, leave=False)
        self._thread = threading.Thread(target=self._tick, name="runprof-progress", daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.bar.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Activity:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Activity"]
