"""``python -m runprof [run] [MODEL] --prompt FILE``: ``generate()`` under ``runprof.track``, then the report."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

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
from .progress import Activity
from .prompts import encode_prompts, progress, prompts_from_args

SUBCOMMANDS_HELP = """subcommands (python -m runprof SUBCOMMAND -h):
  run      the default: generate() under runprof.track, then the summary
  count    static parameter and byte counts from a config (no weights)
  compare  compare two checkpoints tensor by tensor (streaming)
  bench    tokens/s, measured experts and routing statistics for each top-k
  render   render a saved JSON result again
  diff     two saved runs side by side: expert load, active params, speed

examples:
  python -m runprof                                # shipped model and prompt
  python -m runprof --prompt-text "def f(x):" --full # every detail table
  python -m runprof count mixtral"""


def add_run(sub: argparse._SubParsersAction) -> None:
    from ..renderers.run_report import SECTIONS

    p = sub.add_parser(
        "run", help="run generate() under runprof.track (the default command)",
        description="Run generate() under runprof.track and report the measured experts and active\n"
                    "params per token: a summary first, the detail tables with --full or --show.",
        epilog=SUBCOMMANDS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default=None,
                   help="alias (mixtral, olmoe, ...), model directory or hub id; default: runprof's shipped tiny MoE")
    add_prompt(p)
    p.add_argument("--max-new-tokens", type=int, default=32, metavar="N", help="tokens to generate (default 32)")
    p.add_argument("--batch-size", type=int, default=None, metavar="B", help="repeat the prompt(s) to B rows")
    add_device(p)
    add_dtype(p)
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="route each token to K experts (set_top_k)")
    p.add_argument("--config-top-k", type=int, default=None, metavar="K",
                   help="change only config.num_experts_per_tok after loading (shows that routers ignore it)")
    add_json(p)
    add_report(p, sections=SECTIONS)
    add_html(p, "the report with the per-token expert view (with --json, the JSON keeps the view too)")
    p.add_argument("--random-init", action="store_true", help="real architecture from its config, random weights")
    p.add_argument("--num-layers", type=int, default=None, metavar="N", help="with --random-init: keep N layers")
    add_threads(p)
    p.add_argument("--verify-weights", action="store_true", help="fingerprint weights before and after the run")
    p.add_argument("--no-memory", action="store_true", help="skip the memory ledger")
    p.add_argument("--distributed", action="store_true",
                   help="under torchrun: split the --lines prompts across ranks, merge the results; rank 0 reports")
    add_verbose(p)
    p.set_defaults(func=run_run)


def _check_args(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise InvalidArgumentError(f"--max-new-tokens {args.max_new_tokens}: must be at least 1")
    for flag, value in (("--batch-size", args.batch_size), ("--top-k", args.top_k),
                        ("--config-top-k", args.config_top_k), ("--num-layers", args.num_layers)):
        if value is not None and value < 1:
            raise InvalidArgumentError(f"{flag} {value}: must be at least 1")
    if args.num_layers is not None and not args.random_init:
        raise InvalidArgumentError("--num-layers needs --random-init (a truncated checkpoint is not loaded)")
    check_output("--json", args.json, [args.prompt, args.model])
    check_html(args.html, [args.prompt, args.model], args.json)
    check_csv(getattr(args, "csv", None), [args.prompt, args.model])
    from ..renderers.run_report import check_sections

    check_sections(report_options(args).get("show", ()))


def _check_top_k(config: Any, k: int | None) -> None:
    """--top-k against the config's expert count, before any weight is read."""
    from ..moe.discovery import config_num_experts

    if k is None or config is None:
        return
    n = config_num_experts(config)
    if n is None:
        raise InvalidArgumentError(f"--top-k {k}: {type(config).__name__} declares no experts; top-k applies to MoE models")
    if k > n:
        raise InvalidArgumentError(f"--top-k {k} is out of range: this model has {n} experts per layer (1..{n})")


def _check_cache_fits(config: Any, shape: tuple[int, int], new: int, device: Any) -> None:
    """Refuse, before loading, a batch whose KV cache alone (config estimate, 2 bytes per value: the least any
    dtype runprof loads needs) would not fit in the device's memory."""
    from ..memory.kv import kv_estimate
    from ..models.checks import available_bytes

    rows, length = int(shape[0]), int(shape[1])
    need = kv_estimate(config, length + new, 2, rows).value
    have = available_bytes(device)
    if need is not None and have is not None and need > have:
        raise InvalidArgumentError(
            f"{rows:,} rows of {length + new} positions need a KV cache of {need:.2e} bytes, more than the "
            f"{have:.2e} bytes available on {device}; give fewer prompts (--lines), a smaller --batch-size or "
            "fewer --max-new-tokens")


def run_run(args: argparse.Namespace) -> int:
    """The ``run`` command (see :func:`add_run`)."""
    from ..models.loading import parse_device

    _check_args(args)
    set_threads(args.threads)
    notice: list[str] = []  # said with the report's notes, once the run has gone through
    prompts = prompts_from_args(args, notice.append)
    device = parse_device(args.device)
    if not args.distributed:
        return _run(args, prompts, device, notice=notice)
    from .distributed import process_group_from_env, split_prompts

    with process_group_from_env(device) as (device, rank, world):
        return _run(args, split_prompts(prompts, rank, world), device, rank=rank, notice=notice)


def _run(args: argparse.Namespace, prompts: list[str], device: Any, *, rank: int = 0,
         notice: list[str] = ()) -> int:
    """Load, generate under ``track`` and report; under ``--distributed`` only rank 0 prints or writes."""
    import torch

    from ..models.loading import load_model, parse_dtype, prepare
    from ..moe.topk import set_top_k
    from ..renderers import render
    from ..tracking import track

    status = say if rank == 0 else (lambda msg: None)
    t0 = time.perf_counter()
    prep = prepare(args.model, random_init=args.random_init, num_layers=args.num_layers)
    _check_top_k(prep.config, args.top_k)
    inputs = encode_prompts(prep.tokenizer, prep.config, prompts, args.max_new_tokens, args.batch_size)
    with Activity() as activity:
        def start(msg: str) -> None:  # transformers draws its own bar while it loads a checkpoint
            if rank == 0:
                activity.start(msg, live=msg.startswith("building"))

        loaded = load_model(prep, device=device, dtype=parse_dtype(args.dtype), on_start=start)
    model, tok = loaded.model, loaded.tokenizer
    _check_cache_fits(prep.config, inputs["input_ids"].shape, args.max_new_tokens, device)  # before generate
    inputs = {k: v.to(device) for k, v in inputs.items()}
    status(f"loaded in {time.perf_counter() - t0:.1f} s")
    notes = [*notice, *loaded.notes]
    if args.top_k is not None:
        notes.append(f"set_top_k({args.top_k}) changed {len(set_top_k(model, args.top_k))} attributes")
    if args.config_top_k is not None:
        model.config.get_text_config().num_experts_per_tok = args.config_top_k
        notes.append(f"config.num_experts_per_tok set to {args.config_top_k} after loading (routers untouched)")
    bar = progress(args.max_new_tokens, disable=rank != 0)
    with torch.inference_mode(), track(model, verify_weights=args.verify_weights, memory=not args.no_memory,
                                       name=loaded.ref.name, distributed=args.distributed,
                                       trace=bool(args.html), weights=bool(args.html)) as t:
        out = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, logits_processor=[bar])
    bar.bar.close()
    if rank != 0:
        return ExitCode.OK
    generated = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    if args.distributed:
        d = t.result.extra["distributed"]
        notes.append(f"merged across {d['world_size']} ranks ({d['backend']}); per-step records and memory are "
                     "per rank, not shown; generated text below is rank 0's")
    result = dataclasses.replace(t.result, extra={
        **t.result.extra, "notes": notes,
        "generated_first_line": next((line for line in generated.splitlines() if line.strip()), "")})
    if args.html:
        from ..results.tokens import token_view

        result = dataclasses.replace(result, tokens=token_view(t.trace, out, tok))
    print(render(result, **report_options(args)), file=sys.stderr if args.json == "-" else sys.stdout)
    write_json("--json", args.json, result.to_dict())
    write_csv(args.csv, result)
    if args.html:
        write_text("--html", args.html, render(result, format="html"))
    return ExitCode.OK


__all__ = ["add_run", "run_run"]
