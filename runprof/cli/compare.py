"""``python -m runprof compare BASE TARGET``: the argparse pair for the main CLI's SUBCOMMANDS.

Exit code 0 when every value was compared and nothing differs beyond recomputable and ignored tensors, 1
when something differs, 2 when nothing differs but some values could not be read (verdict "not proven":
meta or sparse tensors); bad input raises a :class:`~runprof.errors.RunprofError`, which the main CLI
prints as one line (exit 2).
A progress bar over tensor pairs goes to stderr when it is a terminal.

>>> import argparse
>>> parser = argparse.ArgumentParser(); sub = parser.add_subparsers()
>>> add_compare(sub)
>>> parser.parse_args(["compare", "a", "b", "--base-prefix", "transformer."]).base_prefix
'transformer.'
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from .common import ExitCode, add_device, add_json, add_verbose, check_output, write_json


def add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two checkpoints tensor by tensor (streaming): names, shapes, dtypes, values",
        description="Compare BASE with TARGET: checkpoint directories (safetensors with or without an index, "
                    "pytorch_model*.bin), single .safetensors/.bin files, or hub ids. Values are compared bitwise "
                    "unless --rtol/--atol is given. Exit 0: identical; 1: differences; 2: not proven (some values "
                    "could not be read) or bad input.",
    )
    p.add_argument("base", help="the reference checkpoint")
    p.add_argument("target", help="the checkpoint to check against it")
    p.add_argument("--base-prefix", metavar="P", help="strip P from base names that start with it (e.g. transformer.)")
    p.add_argument("--target-prefix", metavar="P", help="strip P from target names that start with it")
    p.add_argument("--ignore", metavar="REGEX", action="append",
                   help="skip tensors whose name matches (re.search); repeatable")
    p.add_argument("--rtol", type=float, default=0.0, metavar="R", help="relative tolerance (default 0: exact)")
    p.add_argument("--atol", type=float, default=0.0, metavar="A", help="absolute tolerance (default 0: exact)")
    add_device(p, choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--fuse-experts", action="store_true",
                   help="read per-expert MoE tensors (experts.N.w1/w2/w3, v4 layout) as fused "
                        "experts.gate_up_proj / down_proj (v5 layout)")
    add_json(p)
    add_verbose(p)
    p.set_defaults(func=run_compare)


def _progress_bar() -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A ``progress(done, total)`` callback drawing tqdm on stderr, and a function that closes it."""
    from tqdm import tqdm

    state: dict[str, Any] = {}

    def progress(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, unit="tensor", file=sys.stderr, disable=None, leave=False,
                                      desc="comparing")
        bar.update(done - bar.n)

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return progress, close


def run_compare(args: argparse.Namespace) -> int:
    from ..renderers.compare_report import render_compare
    from ..snapshots.compare import compare

    check_output("--json", args.json, [args.base, args.target])
    progress, close = _progress_bar()
    try:
        result = compare(
            args.base, args.target, rtol=args.rtol, atol=args.atol, base_prefix=args.base_prefix,
            target_prefix=args.target_prefix, ignore=args.ignore, fuse_experts=args.fuse_experts,
            device=args.device, progress=progress,
        )
    finally:
        close()
    print(render_compare(result), file=sys.stderr if args.json == "-" else sys.stdout)
    write_json("--json", args.json, result.to_dict())
    return {"identical": ExitCode.OK, "different": ExitCode.DIFFERENT, "not_proven": ExitCode.BAD_INPUT}[result.verdict]
