"""Loading models and tokenizers: the shipped tiny model, local directories, the hub cache, random init.

Everything that can be checked before a weight is read is checked in :func:`prepare` (one line and exit 2
in the CLI, never a traceback): the device (:func:`parse_device`), the config (:func:`~runprof.models.resolve.check_config`: a
causal-LM class, a vocabulary, top-k within the expert count), the tokenizer files of a local folder, and
the headers of its safetensors files. With ``random_init`` the model is first built on the meta device:
a config that cannot be built, builds empty expert tensors, or needs more memory than the device has is
refused, with the bytes it would need.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, InvalidArgumentError, ModelNotFoundError
from .checks import check_buildable, check_device, check_weight_files, first_line, parse_device, parse_dtype
from .resolve import ALIASES, TINY_MOE_DIR, ModelRef, check_config, hub_offline, load_config, resolve

log = logging.getLogger("runprof")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tekken.json", "tokenizer_config.json")
"""Files one of which a local model folder needs for its tokenizer (vocab.json goes with merges.txt)."""


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
        raise InvalidArgumentError.bad("num_layers", num_layers, f"{type(config).__name__} has no num_hidden_layers")
    if not 1 <= num_layers <= old:
        raise InvalidArgumentError.bad("num_layers", num_layers, f"this model has {old} layers (1..{old})")
    for key, value in list(vars(target).items()):
        if isinstance(value, list) and len(value) == old:
            setattr(target, key, value[:num_layers])
    target.num_hidden_layers = num_layers
    return cfg


def _tokenizer(source: str, *, local_only: bool = True) -> Any:
    from transformers import AutoTokenizer

    folder = Path(source)
    if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ModelNotFoundError(
            f"{source}: no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); save the tokenizer there "
            f"(tokenizer.save_pretrained), or use `python -m runprof count {source}`, which needs no tokenizer"
        )
    try:
        tok = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, ImportError) as e:
        raise ModelNotFoundError(
            f"{source}: cannot load its tokenizer ({first_line(e)}); add the tokenizer files "
            f"(tokenizer.save_pretrained), or use `python -m runprof count {source}`, which needs no tokenizer"
        ) from e
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
            "`python examples/train_tiny_moe.py --out shipped`"
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
    before any weight is read: missing weights offline, ``num_layers`` without ``random_init``, a config
    runprof cannot run, a local folder without tokenizer files or with a corrupt safetensors file)."""
    if num_layers is not None and (isinstance(num_layers, bool) or not isinstance(num_layers, int)):
        raise InvalidArgumentError.bad("num_layers", num_layers, "expected a whole number of decoder layers")
    if num_layers is not None and not random_init:
        raise InvalidArgumentError.bad("num_layers", num_layers, "needs random_init (a truncated checkpoint is not "
                                       "loaded)")
    mref = resolve(ref)
    if mref.kind == "shipped":
        _check_shipped()
    notes: list[str] = []
    if random_init:
        config, mref = load_config(ref)
        check_config(config, mref.name)
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
    check_config(config, mref.name)
    if local:
        check_weight_files(mref.weights_source)
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
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    dev = check_device(device) if isinstance(device, torch.device) else parse_device(device)
    dtype = parse_dtype(dtype)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidArgumentError.bad("seed", seed, "expected an integer")
    prep = ref if isinstance(ref, Prepared) else prepare(ref, random_init=random_init, num_layers=num_layers)
    mref, notes = prep.ref, list(prep.notes)
    kwargs: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
    if prep.random_init:
        check_buildable(prep.config, mref.name, dev, dtype)
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
    except SafetensorError as e:  # a shard check_weight_files did not see (in a subfolder, or downloaded now)
        raise CheckpointError(f"{mref.weights_source}: a safetensors file is truncated or corrupt "
                              f"({first_line(e)}); re-download it or save it again") from e
    except (OSError, ValueError) as e:
        local = mref.kind in ("shipped", "dir")
        raise ModelNotFoundError(_missing_weights(mref, local) + f" ({first_line(e)})") from e
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
        except (OSError, ValueError, TypeError, ModelNotFoundError):
            continue
    notes.append(f"the tokenizer of {mref.name} is not available offline: using runprof's shipped tokenizer "
                 "(ids kept inside the model's vocabulary)")
    return shipped_tokenizer()


__all__ = ["ALIASES", "Loaded", "Prepared", "check_buildable", "check_config", "check_device", "check_weight_files",
           "load_model", "prepare", "parse_device", "parse_dtype", "shipped_tokenizer", "truncate_layers"]
