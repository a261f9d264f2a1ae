"""Prompts for ``run`` and ``bench``: read from a file, tokenized for the model, checked against its context."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError


def read_prompts(path: str, lines: bool) -> list[str]:
    """The prompt(s) in ``path`` (one per non-empty line with ``lines``); an unreadable or empty file is an
    error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgumentError(f"--prompt {path}: no such file") from None
    except IsADirectoryError:
        raise InvalidArgumentError(f"--prompt {path}: is a directory; give a text file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"--prompt {path}: cannot read it as UTF-8 text ({e})") from e
    prompts = [line for line in text.splitlines() if line.strip()] if lines else ([text] if text.strip() else [])
    if not prompts:
        raise InvalidArgumentError(f"--prompt {path}: the file is empty")
    return prompts


def prompts_from_args(args: Any, status: Any = None) -> list[str]:
    """The prompts of ``--prompt FILE`` or ``--prompt-text TEXT`` (one per non-empty line with ``--lines``), or
    runprof's shipped prompt when neither is given (``status`` is told so)."""
    lines = bool(getattr(args, "lines", False))
    text = getattr(args, "prompt_text", None)
    if text is not None:
        prompts = [line for line in text.splitlines() if line.strip()] if lines else ([text] if text.strip() else [])
        if not prompts:
            raise InvalidArgumentError("--prompt-text: the text is empty")
        return prompts
    if args.prompt is not None:
        return read_prompts(args.prompt, lines)
    from ..models.resolve import SHIPPED_PROMPT

    if status is not None:
        status(f"no --prompt given: using runprof's shipped prompt ({SHIPPED_PROMPT.name}, Python source)")
    return read_prompts(str(SHIPPED_PROMPT), lines)


def encode_prompts(tok: Any, config: Any, prompts: list[str], max_new: int, batch: int | None = None) -> dict[str, Any]:
    """Tokenize (left-padded batch), keep ids inside the model's vocabulary, and refuse a prompt that
    would run past the model's context with ``max_new`` new tokens (``batch`` repeats the prompts to that
    many rows; fewer rows than prompts is refused rather than dropping prompts)."""
    config = config.get_text_config()
    if batch is not None:
        if batch < len(prompts):
            raise InvalidArgumentError(
                f"--batch-size {batch} is less than the {len(prompts)} prompts given with --lines; omit "
                "--batch-size to run them all as one batch")
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


def progress(total: int, *, disable: bool = False):  # noqa: ANN201 - a transformers LogitsProcessor
    """A LogitsProcessor that advances a progress bar once per generated token (reads nothing from the
    device); the bar is drawn only on a terminal (never ``\\r`` frames in a redirected stderr)."""
    from tqdm.auto import tqdm
    from transformers import LogitsProcessor

    class Progress(LogitsProcessor):
        def __init__(self) -> None:
            self.bar = tqdm(total=total, desc="generating", unit="tok", file=sys.stderr, leave=False,
                            disable=True if disable else None)

        def __call__(self, input_ids, scores):  # noqa: ANN001, ANN204
            self.bar.update(1)
            return scores

    return Progress()


__all__ = ["encode_prompts", "progress", "prompts_from_args", "read_prompts"]
