"""Command line: ``python -m runprof [run] [MODEL] --prompt FILE`` and the other subcommands.

One ``add_*``/``run_*`` pair per subcommand (``run``, ``count``, ``compare``, ``bench``, ``render``, ``diff``), shared
options defined once (:mod:`.common`), and one dispatch: the only ``try`` of the CLI, where a
:class:`RunprofError` becomes one line on stderr and exit 2, and any other exception one line saying it is
a runprof bug (``-v`` shows the traceback) and exit 3. Without a subcommand, ``run`` is meant.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable, Sequence

from ..errors import InvalidArgumentError, RunprofError
from .bench import add_bench
from .common import FLAGS, ExitCode, add_verbose, configure_logging
from .compare import add_compare
from .count import add_count, add_render
from .diff import add_diff
from .run import add_run

SUBCOMMANDS: dict[str, Callable[[Any], None]] = {
    "run": add_run,
    "count": add_count,
    "compare": add_compare,
    "bench": add_bench,
    "render": add_render,
    "diff": add_diff,
}

TOP_FLAGS = ("-v", "--verbose")
"""Flags of the main parser that may stand before a subcommand (``python -m runprof -v count mixtral``)."""

log = logging.getLogger("runprof")


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors as one line (``runprof: error: ...``), exit 2, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"runprof: error: {' '.join(message.split())} (see {self.prog} -h)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m runprof",
        description="Profile transformers models: static counts, measured experts per token, memory, weights.",
        epilog="Without a subcommand, run is meant: python -m runprof [MODEL] --prompt FILE.",
    )
    add_verbose(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}", parser_class=_Parser)
    for add in SUBCOMMANDS.values():
        add(sub)
    return parser


def _with_command(argv: list[str]) -> list[str]:
    """``argv`` with ``run`` inserted when no subcommand is named (``python -m runprof MODEL --prompt F``), so
    ``python -m runprof --help`` shows the run options (and the subcommands in its epilog)."""
    i = 0
    while i < len(argv) and argv[i] in TOP_FLAGS:
        i += 1
    if i < len(argv) and argv[i] in SUBCOMMANDS:
        return argv
    if i < len(argv) and not argv[i].startswith("-"):
        _refuse_misspelt(argv[i])
    return [*argv[:i], "run", *argv[i:]]


def _refuse_misspelt(word: str) -> None:
    """A first word that is no path and close to a subcommand's name is a typo, not a model to look up."""
    import difflib
    import os

    close = difflib.get_close_matches(word, list(SUBCOMMANDS), n=1, cutoff=0.75)
    if close and not os.path.exists(word):
        raise SystemExit(_usage_error(f"{word!r} is not a subcommand (did you mean {close[0]}?)"))


def _usage_error(message: str) -> int:
    print(f"runprof: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (:class:`~runprof.cli.common.ExitCode`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(_with_command(argv))
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, already printed)
        return int(e.code or 0)
    verbose = bool(getattr(args, "verbose", False))
    configure_logging(verbose)
    return dispatch(args.func, args, verbose=verbose)


def dispatch(fn: Callable[[argparse.Namespace], int], args: argparse.Namespace, *, verbose: bool = False) -> int:
    """Run one command: the CLI's only ``try``."""
    try:
        return int(fn(args))
    except RunprofError as e:
        text = e.as_flag(FLAGS) if isinstance(e, InvalidArgumentError) else str(e)
        print(f"runprof: error: {' '.join(text.split())}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        print("runprof: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # `python -m runprof count mixtral | head`: the reader left; say nothing more
        _silence_stdout()
        return ExitCode.OK
    except Exception as e:  # noqa: BLE001 - anything else is runprof's fault, and says so in one line
        if verbose:
            log.exception("unexpected error")
        print(f"runprof: internal error (a runprof bug, please report it): {type(e).__name__}: "
              f"{str(e).splitlines()[0] if str(e) else ''}" + ("" if verbose else " (run with -v for the traceback)"),
              file=sys.stderr)
        return ExitCode.BUG


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main_exit() -> None:
    """Console-script entry point (``runprof ...``)."""
    sys.exit(main())
