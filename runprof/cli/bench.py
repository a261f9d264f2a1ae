"""``python -m runprof bench [MODEL] --prompt FILE --top-k 1,2,4``: the parser and the command."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from ..errors import InvalidArgumentError
from .common import (
    ExitCode,
    add_device,
    add_dtype,
    add_html,
    add_json,
    add_prompt,
    add_report,
    add_threads,
    add_verbose,
    check_csv,
    check_html,
    check_output,
    report_options,
    say,
    set_threads,
    write_csv,
    write_json,
    write_text,
)


def add_bench(sub: argparse._SubParsersAction) -> None:
    """Register the ``bench`` subcommand on the main parser's subparsers."""
    p = sub.add_parser("bench", help="tokens/s, measured experts and routing statistics for each top-k",
                       description="For each top-k and batch size: warm-up, then timed generate() runs under "
                                   "runprof.track; measured experts and active params per token, routing "
                                   "statistics and the prompt's log-likelihood. The model's k is restored.")
    p.add_argument("model", nargs="?", default=None,
                   help="alias, model directory or hub id; default: runprof's shipped tiny MoE")
    add_prompt(p, lines=False)
    p.add_argument("--top-k", metavar="K[,K...]",
                   help="top-k values to compare, e.g. 1,2,4 (default: the model's k, k/2 and 2k where valid)")
    p.add_argument("--batch-size", default="1", metavar="B[,B...]",
                   help="batch sizes, e.g. 1,8 (row b is the prompt rotated by b/B of its length)")
    p.add_argument("--repeats", type=int, default=3, metavar="N", help="timed runs per cell (default 3)")
    p.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed runs per cell first (default 1)")
    p.add_argument("--max-new-tokens", type=int, default=16, metavar="N", help="tokens generated per run (>= 2)")
    add_device(p)
    add_dtype(p)
    add_threads(p)
    add_json(p)
    add_report(p)
    add_html(p, "the report with its figures")
    p.add_argument("--plot", metavar="DIR",
                   help="write the figures to DIR (needs matplotlib: pip install runprof[plot])")
    p.add_argument("--plot-format", default="png", choices=("png", "svg", "pdf"), help="figure format (default png)")
    p.add_argument("--dpi", type=int, default=100, metavar="N", help="figure resolution (default 100)")
    add_verbose(p)
    p.set_defaults(func=run_bench)


def parse_int_list(flag: str, text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``; anything else is an :class:`InvalidArgumentError` naming the flag.

    >>> parse_int_list("--top-k", "1, 2,4")
    [1, 2, 4]
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InvalidArgumentError(f"{flag} {text!r}: expected comma-separated integers such as 1,2,4") from None
    return values


def default_top_ks(k: int | None, num_experts: int) -> list[int]:
    """The model's k, k/2 and 2k, where each is a valid k (1..E).

    >>> default_top_ks(2, 8), default_top_ks(1, 8), default_top_ks(8, 8), default_top_ks(None, 4)
    ([1, 2, 4], [1, 2], [4, 8], [1])
    """
    if k is None:
        return [1]
    return sorted({x for x in (k // 2, k, 2 * k) if 1 <= x <= num_experts})


def _model_top_ks(model: object) -> list[int]:
    from ..moe.discovery import find_moe_layers

    layers = find_moe_layers(model)
    if not layers:
        return [1]  # check_bench_args says why a dense model has nothing to compare
    return default_top_ks(layers[0].top_k, min(layer.num_experts for layer in layers))


def _check_before_loading(args: argparse.Namespace, top_ks: list[int] | None, batch_sizes: list[int]) -> None:
    """The plan against the model's config, before any weight is read (a bad flag costs no load)."""
    from ..models.resolve import load_config
    from ..moe.discovery import config_num_experts
    from ..routing.bench import check_plan, not_moe

    config, ref = load_config(args.model)
    e = config_num_experts(config.get_text_config() if hasattr(config, "get_text_config") else config) \
        or config_num_experts(config)
    if e is None:
        raise not_moe(ref.name)
    check_plan(top_ks, batch_sizes, args.repeats, args.warmup, args.max_new_tokens, e)


def run_bench(args: argparse.Namespace) -> int:
    """Run the bench described by ``args`` (see :func:`add_bench`); print the report; return the exit code."""
    from tqdm.auto import tqdm

    from ..models.loading import load_model, parse_device, parse_dtype
    from ..renderers import render
    from ..routing.bench import bench, check_bench_args
    from .prompts import encode_prompts, prompts_from_args

    top_ks = None if args.top_k is None else parse_int_list("--top-k", args.top_k)
    batch_sizes = parse_int_list("--batch-size", args.batch_size)
    check_output("--json", args.json, [args.prompt, args.model])
    check_html(args.html, [args.prompt, args.model], args.json)
    check_csv(getattr(args, "csv", None), [args.prompt, args.model])
    if args.plot:
        from ..renderers.plots import check_plot_args, require_matplotlib

        require_matplotlib()
        check_plot_args(args.plot_format, args.dpi)
    notice: list[str] = []  # said with the report's notes
    text = prompts_from_args(args, notice.append)[0]
    set_threads(args.threads)
    device = parse_device(args.device)
    _check_before_loading(args, top_ks, batch_sizes)
    t0 = time.perf_counter()
    loaded = load_model(args.model, device=device, dtype=parse_dtype(args.dtype), on_start=lambda msg: say(msg + " ..."))
    say(f"loaded in {time.perf_counter() - t0:.1f} s")
    name = loaded.ref.name
    if top_ks is None:
        top_ks = _model_top_ks(loaded.model)
        say(f"no --top-k given: comparing k = {','.join(map(str, top_ks))} (the model's k, k/2 and 2k)")
    check_bench_args(loaded.model, top_ks, batch_sizes, args.repeats, args.warmup, args.max_new_tokens, name)
    ids = encode_prompts(loaded.tokenizer, loaded.model.config, [text], args.max_new_tokens)["input_ids"]
    total = len(top_ks) * len(batch_sizes) * (args.warmup + args.repeats)
    with tqdm(total=total, desc="bench", unit="run", file=sys.stderr, leave=False, disable=None) as bar:
        def step(label: str) -> None:
            bar.set_postfix_str(label, refresh=False)
            bar.update(1)

        result = bench(loaded.model, ids, top_ks=top_ks, batch_sizes=batch_sizes, repeats=args.repeats,
                       warmup=args.warmup, max_new_tokens=args.max_new_tokens,
                       pad_token_id=loaded.tokenizer.pad_token_id, name=name, on_generate=step)
    result = dataclasses.replace(result, notes=(*notice, *loaded.notes))
    print(render(result, **report_options(args)), file=sys.stderr if args.json == "-" else sys.stdout)
    write_json("--json", args.json, result.to_dict())
    write_csv(args.csv, result)
    if args.html:
        write_text("--html", args.html, render(result, format="html"))
    if args.plot:
        from ..renderers.plots import plot_bench

        for path in plot_bench(result, args.plot, fmt=args.plot_format, dpi=args.dpi):
            say(f"wrote {path}")
    return ExitCode.OK


__all__ = ["add_bench", "default_top_ks", "parse_int_list", "run_bench"]
