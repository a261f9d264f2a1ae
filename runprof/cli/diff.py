"""``python -m runprof diff RUN_A.json RUN_B.json``: two saved runs side by side (what did my change do)."""
from __future__ import annotations

import argparse

from ..errors import InvalidArgumentError
from .common import ExitCode, add_verbose


def add_diff(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diff", help="two saved runs side by side: expert load, experts and active params per token, tokens/s, memory",
        description="Compare two runs saved with --json (e.g. before and after a change to k, the router or the "
                    "checkpoint): experts and active params per token with their exact change, tokens/s, memory, "
                    "and each MoE layer's expert-load shares and how they moved.")
    p.add_argument("a", help="the first run (JSON written by python -m runprof --json)")
    p.add_argument("b", help="the second run")
    p.add_argument("--full", action="store_true", help="every expert's share in every layer, not only the largest moves")
    add_verbose(p)
    p.set_defaults(func=run_diff)


def run_diff(args: argparse.Namespace) -> int:
    from ..renderers.diff_report import render_diff
    from ..results import TrackResult
    from ..saved import load_result

    runs = [load_result(path) for path in (args.a, args.b)]
    for path, r in zip((args.a, args.b), runs):
        if not isinstance(r, TrackResult):
            raise InvalidArgumentError(f"{path}: holds a {type(r).__name__}; diff compares two runs "
                                       "(python -m runprof ... --json FILE)")
    print(render_diff(runs[0], runs[1], full=args.full, names=(args.a, args.b)))
    return ExitCode.OK


__all__ = ["add_diff", "run_diff"]
