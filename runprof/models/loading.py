"""Loading models and tokenizers: the shipped tiny model, local directories, the hub cache, random init."""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InvalidArgumentError, ModelNotFoundError
from .resolve import ALIASES, TINY_MOE_DIR, ModelRef, hub_offline, load_config, resolve

log = logging.getLogger("runprof")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_dtype(text: str | None) -> torch.dtype | None:
    """``"bf16"`` -> ``torch.bfloat16``; ``"auto"``/``None`` -> ``None`` (the checkpoint's own dtype)."""
    if text in (None, "auto"):
        return None
    try:
        return _DTYPES[text]
    except KeyError:
        raise InvalidArgumentError(f"dtype {text!r}: expected one of auto, {', '.join(_DTYPES)}") from None


def parse_device(text: str | None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if text in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidArgumentError(f"--device {text}: no CUDA GPU is available here; use --device cpu or auto")
    try:
        return torch.device(text)
    except RuntimeError as e:
        raise InvalidArgumentError(f"--device {text!r}: expected cpu, cuda, cuda:N or auto") from e


@dataclass
class Loaded:
    """A model ready to run, its tokenizer, and what the report should say about how it was made."""

    model: nn.Module
    tokenizer: Any
    ref: ModelRef
    notes: list[str] = field(default_factory=list)


def truncate_layers(config: Any, num_layers: int) -> Any:
    """A copy of ``config`` keeping only the first ``num_layers`` decoder layers (per-layer lists too)."""
    cfg = copy.deepcopy(config)
    target = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    old = getattr(target, "num_hidden_layers", None)
    if not isinstance(old, int):
        raise InvalidArgumentError(f"--num-layers: {type(config).__name__} has no num_hidden_layers to reduce")
    if not 1 <= num_layers <= old:
        raise InvalidArgumentError(f"--num-layers {num_layers}: this model has {old} layers (1..{old})")
    for key, value in list(vars(target).items()):
        if isinstance(value, list) and len(value) == old:
            setattr(target, key, value[:num_layers])
    target.num_hidden_layers = num_layers
    return cfg


def _tokenizer(source: str, *, local_only: bool = True) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    tok.padding_side = "left"
    return tok


def shipped_tokenizer() -> Any:
    """The tokenizer shipped with the tiny model (byte-level BPE trained on the standard library)."""
    _check_shipped()
    return _tokenizer(str(TINY_MOE_DIR))


def _check_shipped() -> None:
    if not (TINY_MOE_DIR / "model.safetensors").is_file():
        raise ModelNotFoundError(
            f"the shipped tiny model is missing from {TINY_MOE_DIR}; reinstall runprof or rebuild it with "
            "`python examples/train_tiny_moe.py`"
        )


@dataclass
class Prepared:
    """Everything known before any weight is read: config, tokenizer, where the weights come from."""

    ref: ModelRef
    config: Any
    tokenizer: Any
    random_init: bool
    num_layers: int | None
    cached: bool = True
    notes: list[str] = field(default_factory=list)


def prepare(ref: str | os.PathLike[str] | None = None, *, random_init: bool = False,
            num_layers: int | None = None) -> Prepared:
    """Resolve ``ref``, read its config and tokenizer, and check that weights can be had (fails fast,
    before any weight is read: missing weights offline, ``--num-layers`` without ``--random-init``)."""
    if num_layers is not None and not random_init:
        raise InvalidArgumentError("--num-layers needs --random-init (a truncated checkpoint is not loaded)")
    mref = resolve(ref)
    if mref.kind == "shipped":
        _check_shipped()
    notes: list[str] = []
    if random_init:
        config, mref = load_config(ref)
        if num_layers is not None:
            config = truncate_layers(config, num_layers)
            notes.append(f"kept the first {num_layers} decoder layers")
        return Prepared(mref, config, _tokenizer_or_shipped(mref, notes), True, num_layers, True, notes)
    if mref.weights_source is None:
        raise ModelNotFoundError(
            f"{mref.name}: a config file has no weights; use `python -m runprof count {mref.name}` or add --random-init"
        )
    local = mref.kind in ("shipped", "dir")
    cached = local or _in_hf_cache(mref.weights_source)
    if not cached and hub_offline():
        raise ModelNotFoundError(_missing_weights(mref, local))
    config, _ = load_config(ref)
    tokenizer = _tokenizer(mref.weights_source, local_only=cached)
    return Prepared(mref, config, tokenizer, False, None, cached, notes)


def load_model(
    ref: str | os.PathLike[str] | Prepared | None = None,
    *,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype | None = None,
    random_init: bool = False,
    num_layers: int | None = None,
    seed: int = 0,
    on_start: Any = None,
) -> Loaded:
    """Load a model and its tokenizer for a run.

    ``ref`` is ``None`` (the shipped tiny MoE), an alias, a local model directory, a hub id (from the
    local cache; downloaded only when the hub is reachable) or the result of :func:`prepare`.
    ``random_init`` builds the real architecture from its config with random weights (``num_layers`` keeps
    the first N decoder layers).

    >>> loaded = load_model()  # the shipped tiny MoE, offline
    >>> type(loaded.model).__name__
    'MixtralForCausalLM'
    """
    from transformers import AutoModelForCausalLM

    dev = device if isinstance(device, torch.device) else parse_device(device)
    prep = ref if isinstance(ref, Prepared) else prepare(ref, random_init=random_init, num_layers=num_layers)
    mref, notes = prep.ref, list(prep.notes)
    kwargs: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
    if prep.random_init:
        torch.manual_seed(seed)
        if on_start is not None:
            on_start(f"building {mref.name} with random weights on {dev}")
        with dev:
            model = AutoModelForCausalLM.from_config(prep.config, **kwargs)
        notes.append(f"random weights (seed {seed}) in the real architecture of {mref.name}")
        return Loaded(model.eval(), prep.tokenizer, mref, notes)
    if on_start is not None:
        on_start(f"loading {mref.name} on {dev}")
    try:
        model = AutoModelForCausalLM.from_pretrained(mref.weights_source, local_files_only=prep.cached, **kwargs)
    except (OSError, ValueError) as e:
        local = mref.kind in ("shipped", "dir")
        raise ModelNotFoundError(_missing_weights(mref, local) + f" ({str(e).splitlines()[0]})") from e
    return Loaded(model.to(dev).eval(), prep.tokenizer, mref, notes)


def _in_hf_cache(repo_id: str) -> bool:
    """True when the local Hugging Face cache holds this repo's config (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an unusual cache layout means "not cached"
        return False


def _missing_weights(mref: ModelRef, local: bool) -> str:
    where = f"{mref.weights_source} has no loadable weights" if local else (
        f"weights for {mref.weights_source} are not in the local Hugging Face cache and the hub is unreachable")
    return (f"{mref.name}: {where}; alternatives: `python -m runprof count {mref.name}` (no weights needed) or "
            f"`python -m runprof {mref.name} --random-init --num-layers N` (real architecture, random weights)")


def _tokenizer_or_shipped(mref: ModelRef, notes: list[str]) -> Any:
    sources = [mref.weights_source] if mref.weights_source else []
    for source in sources:
        try:
            return _tokenizer(source, local_only=True)
        except (OSError, ValueError, TypeError):
            continue
    notes.append(f"the tokenizer of {mref.name} is not available offline: using runprof's shipped tokenizer "
                 "(ids kept inside the model's vocabulary)")
    return shipped_tokenizer()


__all__ = ["ALIASES", "Loaded", "Prepared", "load_model", "prepare", "parse_device", "parse_dtype", "shipped_tokenizer", "truncate_layers"]
