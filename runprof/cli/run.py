"""The main job: ``python -m runprof [MODEL] --prompt FILE`` runs ``generate()`` under ``runprof.track``."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ..errors import InvalidArgumentError

EXIT_OK = 0


def build_run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m runprof",
        description="Run generate() under runprof.track and report measured experts and active params per token. "
                    "Subcommands: count, compare, bench, render (python -m runprof SUBCOMMAND -h).",
    )
    p.add_argument("model", nargs="?", default=None,
                   help="alias (mixtral, olmoe, ...), model directory or hub id; default: runprof's shipped tiny MoE")
    p.add_argument("--prompt", required=True, metavar="FILE", help="text file with the prompt")
    p.add_argument("--lines", action="store_true", help="one prompt per line (a batch)")
    p.add_argument("--max-new-tokens", type=int, default=32, metavar="N")
    p.add_argument("--batch-size", type=int, default=None, metavar="B", help="repeat the prompt(s) to B rows")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="route each token to K experts (set_top_k)")
    p.add_argument("--config-top-k", type=int, default=None, metavar="K",
                   help="change only config.num_experts_per_tok after loading (shows that routers ignore it)")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    p.add_argument("--random-init", action="store_true", help="real architecture from its config, random weights")
    p.add_argument("--num-layers", type=int, default=None, metavar="N", help="with --random-init: keep N layers")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (1 is often fastest for small models on a busy machine)")
    p.add_argument("--verify-weights", action="store_true", help="fingerprint weights before and after the run")
    p.add_argument("--no-memory", action="store_true", help="skip the memory ledger")
    p.add_argument("--distributed", action="store_true",
                   help="under torchrun: split the --lines prompts across ranks, merge the results; rank 0 reports")
    p.add_argument("-v", "--verbose", action="store_true", help="log runprof's decisions to stderr")
    return p


def read_prompts(path: str, lines: bool) -> list[str]:
    """The prompt(s) in ``path``; an unreadable or empty file is an error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgumentError(f"--prompt {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"--prompt {path}: cannot read it as UTF-8 text ({e})") from e
    prompts = [line for line in text.splitlines() if line.strip()] if lines else ([text] if text.strip() else [])
    if not prompts:
        raise InvalidArgumentError(f"--prompt {path}: the file is empty")
    return prompts


def _check_args(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise InvalidArgumentError(f"--max-new-tokens {args.max_new_tokens}: must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        raise InvalidArgumentError(f"--batch-size {args.batch_size}: must be at least 1")
    for flag, value in (("--top-k", args.top_k), ("--config-top-k", args.config_top_k)):
        if value is not None and value < 1:
            raise InvalidArgumentError(f"{flag} {value}: must be at least 1")


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


def set_threads(n: int | None) -> None:
    """``--threads N``: torch's CPU thread count for this process (N >= 1; None leaves torch's default)."""
    if n is None:
        return
    if n < 1:
        raise InvalidArgumentError(f"--threads {n}: must be at least 1")
    import torch

    torch.set_num_threads(n)


def encode_prompts(tok: Any, config: Any, prompts: list[str], max_new: int, batch: int | None = None) -> dict[str, Any]:
    """Tokenize (left-padded batch), keep ids inside the model's vocabulary, and refuse a prompt that
    would run past the model's context with ``max_new`` new tokens."""
    config = config.get_text_config()
    if batch is not None:
        prompts = (prompts * batch)[:batch]
    enc = tok(prompts, return_tensors="pt", padding=True)
    vocab = config.vocab_size
    if int(enc["input_ids"].max()) >= vocab:
        enc["input_ids"] = enc["input_ids"] % vocab  # shipped tokenizer on a model with a smaller vocabulary
    limit = getattr(config, "max_position_embeddings", None)
    length = enc["input_ids"].shape[1]
    if isinstance(limit, int) and length + max_new > limit:
        raise InvalidArgumentError(
            f"the prompt is {length} tokens and --max-new-tokens {max_new} would reach {length + max_new}, past the "
            f"model's context of {limit} tokens; shorten the prompt or lower --max-new-tokens"
        )
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def _progress(total: int, *, disable: bool = False):  # noqa: ANN202 - a transformers LogitsProcessor
    from tqdm.auto import tqdm
    from transformers import LogitsProcessor

    class Progress(LogitsProcessor):
        """Advances a progress bar once per generated token (reads nothing from the device)."""

        def __init__(self) -> None:
            self.bar = tqdm(total=total, desc="generating", unit="tok", file=sys.stderr, leave=False,
                            disable=disable)

        def __call__(self, input_ids, scores):  # noqa: ANN001, ANN204
            self.bar.update(1)
            return scores

    return Progress()


def run_main(argv: Sequence[str]) -> int:
    import logging

    from ..models.loading import parse_device

    args = build_run_parser().parse_args(list(argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="runprof: %(message)s")
    _check_args(args)
    set_threads(args.threads)
    prompts = read_prompts(args.prompt, args.lines)
    device = parse_device(args.device)
    if not args.distributed:
        return _run(args, prompts, device)
    from ..tracking.distributed import process_group_from_env, split_prompts

    with process_group_from_env(device) as (device, rank, world):
        return _run(args, split_prompts(prompts, rank, world), device, rank=rank)


def _run(args: argparse.Namespace, prompts: list[str], device: Any, *, rank: int = 0) -> int:
    """Load, generate under ``track`` and report; under ``--distributed`` only rank 0 prints or writes."""
    import torch

    from .. import set_top_k, track
    from ..models.loading import load_model, parse_dtype, prepare
    from ..renderers.text import render_track

    say = (lambda msg: print(msg, file=sys.stderr)) if rank == 0 else (lambda msg: None)
    t0 = time.perf_counter()
    prep = prepare(args.model, random_init=args.random_init, num_layers=args.num_layers)
    _check_top_k(prep.config, args.top_k)
    inputs = encode_prompts(prep.tokenizer, prep.config, prompts, args.max_new_tokens, args.batch_size)
    loaded = load_model(prep, device=device, dtype=parse_dtype(args.dtype),
                        on_start=lambda msg: say(msg + " ..."))
    model = loaded.model
    inputs = {k: v.to(device) for k, v in inputs.items()}
    say(f"loaded in {time.perf_counter() - t0:.1f} s")
    notes = list(loaded.notes)
    if args.top_k is not None:
        changes = set_top_k(model, args.top_k)
        notes.append(f"set_top_k({args.top_k}) changed {len(changes)} attributes")
    if args.config_top_k is not None:
        model.config.get_text_config().num_experts_per_tok = args.config_top_k
        notes.append(f"config.num_experts_per_tok set to {args.config_top_k} after loading (routers untouched)")
    progress = _progress(args.max_new_tokens, disable=rank != 0)
    tok = loaded.tokenizer
    with torch.inference_mode(), track(model, verify_weights=args.verify_weights,
                                       memory=False if args.no_memory else None, name=loaded.ref.name,
                                       distributed=args.distributed) as t:
        out = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, logits_processor=[progress])
    progress.bar.close()
    result = t.result
    generated = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    first_line = next((line for line in generated.splitlines() if line.strip()), "")
    if rank != 0:
        return EXIT_OK
    print(render_track(result))
    if args.distributed:
        d = result.extra["distributed"]
        notes.append(f"merged across {d['world_size']} ranks ({d['backend']}); per-step records and memory are "
                     "per rank, not shown; generated text below is rank 0's")
    for note in notes:
        print(f"note: {note}")
    print(f"generated (first line): {first_line!r}")
    if args.json:
        from . import _write_json

        data = result.to_dict()
        data.setdefault("extra", {})["notes"] = notes
        data["extra"]["generated_first_line"] = first_line
        _write_json(args.json, data)
    return EXIT_OK
