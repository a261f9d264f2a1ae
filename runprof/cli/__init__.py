"""Command line: ``python -m runprof [MODEL] --prompt FILE`` and subcommands.

One ``add_*``/``run_*`` pair per subcommand; the commands call the public API and print what the
renderers return. A :class:`RunprofError` becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import RunprofError
from .bench import add_bench
from .compare import add_compare

EXIT_OK, EXIT_DIFF, EXIT_USAGE = 0, 1, 2


def _write_json(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        raise RunprofError(f"--json {path}: cannot write ({e.strerror})") from e
    print(f"wrote {target}", file=sys.stderr)


# --- count ---------------------------------------------------------------------------------------
def add_count(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("count", help="static parameter and byte counts from a config (no weights)")
    p.add_argument("model", help="alias (mixtral, mistral-7b, ...), config.json, model directory or hub id")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto", help="count bytes in this dtype")
    p.add_argument("--no-layers", action="store_true", help="omit the layer-folded table")
    p.set_defaults(func=run_count)


def run_count(args: argparse.Namespace) -> int:
    from ..models.loading import parse_dtype
    from ..renderers.text import render_count
    from ..static import count_params

    result = count_params(args.model, dtype=parse_dtype(args.dtype), name=args.model)
    print(render_count(result, layers=not args.no_layers))
    _write_json(args.json, result.to_dict())
    return EXIT_OK


# --- render --------------------------------------------------------------------------------------
def add_render(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="render a saved JSON result again")
    p.add_argument("path", help="a JSON file written with --json")
    p.set_defaults(func=run_render)


def run_render(args: argparse.Namespace) -> int:
    from ..renderers.text import render_count, render_track
    from ..results import TrackResult, result_from_dict

    try:
        data = json.loads(Path(args.path).read_text(encoding="utf-8"))
    except OSError as e:
        raise RunprofError(f"{args.path}: cannot read ({e.strerror})") from e
    except json.JSONDecodeError as e:
        raise RunprofError(f"{args.path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    result = result_from_dict(data)
    print(render_track(result) if isinstance(result, TrackResult) else render_count(result))
    return EXIT_OK


SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "count": add_count,
    "compare": add_compare,
    "bench": add_bench,
    "render": add_render,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runprof",
        description="Profile transformers models: static counts, measured experts per token, memory, weights.",
        epilog="Without a subcommand: python -m runprof [MODEL] --prompt FILE runs generate() under runprof.track.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log runprof's decisions to stderr")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for add in SUBCOMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 differences found, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    if first not in SUBCOMMANDS and not any(a in ("-h", "--help") for a in argv[:1]):
        from .run import run_main

        return _guard(lambda: run_main(argv))
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="runprof: %(message)s")
    return _guard(lambda: args.func(args))


def _guard(fn: Callable[[], int]) -> int:
    try:
        return fn()
    except RunprofError as e:
        print(f"runprof: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("runprof: interrupted", file=sys.stderr)
        return 130


def main_exit() -> None:
    """Console-script entry point (``runprof ...``)."""
    sys.exit(main())
