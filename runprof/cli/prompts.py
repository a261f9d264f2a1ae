"""Prompts for ``run`` and ``bench``: read from a file, tokenized for the model, checked against its context."""
from __future__ import annotations

import sys
from typing import Any

from ..errors import InvalidArgumentError

MAX_PROMPT_BYTES = 256 * 2**20
"""A prompt file larger than this is refused unread (more text than any model's context holds; also stops
``--prompt /dev/zero`` from reading forever)."""


def read_prompts(path: str, lines: bool) -> list[str]:
    """The prompt(s) in ``path`` (one per non-empty line with ``lines``); an unreadable, binary, oversized or
    empty file is an error."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PROMPT_BYTES + 1)
    except FileNotFoundError:
        raise InvalidArgumentError(f"--prompt {path}: no such file") from None
    except IsADirectoryError:
        raise InvalidArgumentError(f"--prompt {path}: is a directory; give a text file") from None
    except OSError as e:
        raise InvalidArgumentError(f"--prompt {path}: cannot read it ({e.strerror or e})") from e
    if len(data) > MAX_PROMPT_BYTES:
        raise InvalidArgumentError(f"--prompt {path}: more than {MAX_PROMPT_BYTES // 2**20} MiB, more text than any "
                                   "model's context holds; give a shorter text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidArgumentError(f"--prompt {path}: not UTF-8 text (byte {e.start} is {data[e.start]:#04x}); save "
                                   "it as UTF-8") from e
    if "\x00" in text:
        raise InvalidArgumentError(f"--prompt {path}: holds NUL bytes (a binary file?); give a text file")
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
        status(f"prompt: runprof's shipped prompt ({SHIPPED_PROMPT.name}, Python source; no --prompt was given)")
    return read_prompts(str(SHIPPED_PROMPT), lines)


BOUNDARY_TOKENS = 16
"""How many more tokens a prefix cut out of a prompt may count than the same text inside the whole prompt (a
word split at the cut); a prefix proves the prompt too long only by more than this."""


def _too_long(tok: Any, text: str, budget: int) -> tuple[int, int] | None:
    """``(at least this many tokens, counted in this many characters)`` when a prefix of ``text`` already holds
    more than ``budget`` tokens; None when only the whole text can tell. Prefixes start near four characters per
    token of the budget and grow fourfold, cut at a space or newline, so a prompt far past the context costs one
    small tokenization instead of the whole file's (seconds for megabytes)."""
    n = 4 * max(budget, 0) + 1024
    while n < len(text):
        cut = max(text.rfind(" ", 0, n), text.rfind("\n", 0, n))
        cut = cut if cut > n // 2 else n
        least = len(tok(text[:cut])["input_ids"]) - BOUNDARY_TOKENS
        if least > budget:
            return least, cut
        n *= 4
    return None


def _repeat_rows(enc: Any, batch: int) -> dict[str, Any]:
    """The tokenized prompts repeated to ``batch`` rows (row i is prompt i mod n), refused when the token ids
    alone would not fit in memory (so ``--batch-size 10**9`` is one line, not a crash)."""
    import torch

    from ..models.checks import available_bytes

    ids = enc["input_ids"]
    need = batch * ids.shape[1] * ids.element_size() * len(enc)
    have = available_bytes(torch.device("cpu"))
    if have is not None and need > have // 2:
        raise InvalidArgumentError(
            f"--batch-size {batch}: {batch:,} rows of {ids.shape[1]} tokens need {need:.2e} bytes for the token ids "
            f"alone, more than half the {have:.2e} bytes of memory available; use a smaller --batch-size")
    rows = torch.arange(batch) % ids.shape[0]
    return {k: v[rows] for k, v in enc.items()}


def encode_prompts(tok: Any, config: Any, prompts: list[str], max_new: int, batch: int | None = None) -> dict[str, Any]:
    """Tokenize (left-padded batch), keep ids inside the model's vocabulary, and refuse a prompt that
    would run past the model's context with ``max_new`` new tokens (``batch`` repeats the prompts to that
    many rows; fewer rows than prompts is refused rather than dropping prompts). A prompt far past the
    context is refused from a prefix, before the whole text is tokenized."""
    config = config.get_text_config()
    if batch is not None and batch < len(prompts):
        raise InvalidArgumentError(
            f"--batch-size {batch} is less than the {len(prompts)} prompts given with --lines; omit "
            "--batch-size to run them all as one batch")
    limit = getattr(config, "max_position_embeddings", None)
    limit = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
    for text in dict.fromkeys(prompts) if limit is not None else ():
        if (found := _too_long(tok, text, limit - max_new)) is not None:
            raise InvalidArgumentError(
                f"the prompt is more than {found[0]} tokens (its first {found[1]:,} characters alone) and "
                f"--max-new-tokens {max_new} would reach past the model's context of {limit} tokens; shorten the "
                "prompt or lower --max-new-tokens")
    enc = tok(prompts, return_tensors="pt", padding=True)
    if batch is not None and batch > len(prompts):
        enc = _repeat_rows(enc, batch)
    vocab = config.vocab_size
    if int(enc["input_ids"].max()) >= vocab:
        enc["input_ids"] = enc["input_ids"] % vocab  # shipped tokenizer on a model with a smaller vocabulary
    length = enc["input_ids"].shape[1]
    if limit is not None and length + max_new > limit:
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
