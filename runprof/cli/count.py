"""``python -m runprof count MODEL`` and ``python -m runprof render FILE``: the argparse pairs."""
from __future__ import annotations

import argparse
import sys

from .common import (
    ExitCode,
    add_dtype,
    add_html,
    add_json,
    add_report,
    add_verbose,
    check_csv,
    check_html,
    check_output,
    report_options,
    write_csv,
    write_json,
    write_text,
)


def add_count(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("count", help="static parameter and byte counts from a config (no weights)")
    p.add_argument("model", help="alias (mixtral, mistral-7b, ...), config.json, model directory or hub id")
    add_json(p)
    add_dtype(p, help="count bytes in this dtype (auto: the config's own)")
    p.add_argument("--no-layers", action="store_true", help="omit the layer-folded table")
    add_verbose(p)
    p.set_defaults(func=run_count)


def run_count(args: argparse.Namespace) -> int:
    from ..models.loading import parse_dtype
    from ..renderers.count_report import render_count
    from ..static import count_params

    check_output("--json", args.json, [args.model])
    result = count_params(args.model, dtype=parse_dtype(args.dtype), name=args.model)
    print(render_count(result, layers=not args.no_layers), file=sys.stderr if args.json == "-" else sys.stdout)
    write_json("--json", args.json, result.to_dict())
    return ExitCode.OK


def add_render(sub: argparse._SubParsersAction) -> None:
    from ..renderers.run_report import SECTIONS

    p = sub.add_parser("render", help="render a saved JSON result again (any kind runprof writes)")
    p.add_argument("path", help="a JSON file written with --json")
    add_report(p, sections=SECTIONS)
    add_html(p, "the report of a run or bench result")
    add_verbose(p)
    p.set_defaults(func=run_render)


def run_render(args: argparse.Namespace) -> int:
    from ..renderers import render
    from ..saved import load_result

    check_html(args.html, [args.path])
    check_csv(args.csv, [args.path])
    result = load_result(args.path)
    page = render(result, format="html") if args.html else None
    print(render(result, **report_options(args)))
    write_csv(args.csv, result)
    if page is not None:
        write_text("--html", args.html, page)
    return ExitCode.OK


__all__ = ["add_count", "add_render", "run_count", "run_render"]
