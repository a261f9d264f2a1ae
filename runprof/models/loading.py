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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InvalidArgumentError, ModelNotFoundError
from .resolve import (ALIASES, EXPERT_FIELDS, TINY_MOE_DIR, ModelRef, check_config, hub_offline, int_field, load_config,
                      resolve, text_config)

log = logging.getLogger("runprof")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
RUNNABLE_DEVICES = ("cpu", "cuda", "mps", "xpu")
"""Device types a model can run on (``meta`` has shapes but no values)."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tekken.json", "tokenizer_config.json")
"""Files one of which a local model folder needs for its tokenizer (vocab.json goes with merges.txt)."""


def parse_dtype(text: str | None) -> torch.dtype | None:
    """``"bf16"`` -> ``torch.bfloat16``; ``"auto"``/``None`` -> ``None`` (the checkpoint's own dtype)."""
    if text in (None, "auto"):
        return None
    try:
        return _DTYPES[text]
    except KeyError:
        raise InvalidArgumentError(f"dtype {text!r}: expected one of auto, {', '.join(_DTYPES)}") from None


def parse_device(text: str | None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a device that cannot run a model here is an error.

    Accepted: ``cpu``, ``cuda``/``cuda:N`` (N below the GPU count), ``mps`` and ``xpu`` where available.

    >>> parse_device("cpu")
    device(type='cpu')
    >>> parse_device("meta")
    Traceback (most recent call last):
    ...
    runprof.errors.InvalidArgumentError: --device meta: a model cannot run on meta ...
    """
    if text in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidArgumentError(f"--device {text}: no CUDA GPU is available here; use --device cpu or auto")
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError) as e:
        raise InvalidArgumentError(f"--device {text!r}: expected cpu, cuda, cuda:N, mps, xpu or auto") from e
    return check_device(dev, text)


def _backend(kind: str) -> tuple[bool, int]:
    """(available, device count) of a device type, without touching any device's memory."""
    if kind == "cpu":
        return True, 1
    if kind == "cuda":
        return torch.cuda.is_available(), torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "mps":
        return torch.backends.mps.is_available(), 1
    xpu = getattr(torch, "xpu", None)
    return (True, xpu.device_count()) if xpu is not None and xpu.is_available() else (False, 0)


def check_device(dev: torch.device, text: str | None = None) -> torch.device:
    """``dev`` when a model can run there now; InvalidArgumentError (meta, a missing backend or index) else."""
    label = text or str(dev)
    if dev.type not in RUNNABLE_DEVICES:
        why = "meta tensors have shapes but no values" if dev.type == "meta" else "runprof runs on cpu, cuda, mps, xpu"
        raise InvalidArgumentError(
            f"--device {label}: a model cannot run on {dev.type} ({why}); use cpu, cuda, cuda:N, mps, xpu or auto "
            "(`python -m runprof count` needs no device)"
        )
    available, count = _backend(dev.type)
    if not available:
        raise InvalidArgumentError(f"--device {label}: no {dev.type} device is available here; use --device cpu or auto")
    if dev.type != "cpu" and dev.index is not None and dev.index >= count:
        raise InvalidArgumentError(
            f"--device {label}: this machine has {count} {dev.type} device{'s' if count != 1 else ''} "
            f"({dev.type}:0..{dev.type}:{count - 1}); pick one of those or auto"
        )
    return dev


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
            f"{source}: cannot load its tokenizer ({_first_line(e)}); add the tokenizer files "
            f"(tokenizer.save_pretrained), or use `python -m runprof count {source}`, which needs no tokenizer"
        ) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    tok.padding_side = "left"
    return tok


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


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


def check_weight_files(folder: str | os.PathLike[str]) -> None:
    """Open the header of every ``*.safetensors`` file in ``folder`` (no weight is read): a truncated or
    corrupt file is a CheckpointError naming it, before the model is built."""
    from safetensors import SafetensorError, safe_open

    from ..snapshots.checkpoints import CheckpointError

    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise CheckpointError(
                f"{path}: truncated or corrupt safetensors file ({_first_line(e)}); re-download it or save it again "
                f"(`python -m runprof count {folder}` needs no weights)"
            ) from e


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
    before any weight is read: missing weights offline, ``--num-layers`` without ``--random-init``, a config
    runprof cannot run, a local folder without tokenizer files or with a corrupt safetensors file)."""
    if num_layers is not None and not random_init:
        raise InvalidArgumentError("--num-layers needs --random-init (a truncated checkpoint is not loaded)")
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

    from ..snapshots.checkpoints import CheckpointError

    dev = check_device(device) if isinstance(device, torch.device) else parse_device(device)
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
                              f"({_first_line(e)}); re-download it or save it again") from e
    except (OSError, ValueError) as e:
        local = mref.kind in ("shipped", "dir")
        raise ModelNotFoundError(_missing_weights(mref, local) + f" ({_first_line(e)})") from e
    return Loaded(model.to(dev).eval(), prep.tokenizer, mref, notes)


def available_bytes(dev: torch.device) -> int | None:
    """Memory a model built on ``dev`` may take: CPU: MemAvailable, capped by a cgroup limit; CUDA: the GPU's
    total memory (its free memory is read by ``runprof.memory``, the one caller of the allocator's API);
    None where unknown."""
    if dev.type == "cuda":
        return int(torch.cuda.get_device_properties(dev).total_memory)
    if dev.type != "cpu":
        return None
    have = None
    try:
        found = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        have = int(found[1]) * 1024 if found else None
        limit, used = (Path(f"/sys/fs/cgroup/memory.{f}").read_text().strip() for f in ("max", "current"))
        if limit.isdigit() and used.isdigit():  # a container's limit (cgroup v2) may be below MemAvailable
            have = min(have if have is not None else int(limit), int(limit) - int(used))
    except (OSError, ValueError):
        pass
    return have


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if scale <= n < 2**70:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes" if n < 2**20 else f"{n:.2e} bytes"


def _meta_build(config: Any, name: str, dtype: torch.dtype | None) -> nn.Module:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, **kwargs)
    except Exception as e:  # noqa: BLE001 - a config's sizes can break transformers in many ways
        sizes = re.search(r"sizes=\[([\d, ]+)\]", str(e))
        if sizes:
            numel = 1
            for d in sizes[1].split(","):
                numel *= int(d)
            itemsize = (dtype or torch.get_default_dtype()).itemsize
            raise InvalidArgumentError(
                f"{name}: one [{sizes[1]}] tensor of this config alone would need {_size(numel * itemsize)}, more "
                "than any memory holds; check hidden_size, intermediate_size and vocab_size in the config"
            ) from e
        raise InvalidArgumentError(
            f"{name}: transformers cannot build this config ({type(e).__name__}: {_first_line(e)}); check its sizes"
        ) from e


def check_buildable(config: Any, name: str, dev: torch.device, dtype: torch.dtype | None = None) -> None:
    """Build ``config`` on the meta device (no memory) and refuse what cannot be built for real on ``dev``:
    a config whose MoE layers have no experts, or weights larger than the memory ``dev`` has.

    >>> from transformers import MixtralConfig
    >>> cfg = MixtralConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
    ...                     num_key_value_heads=1, vocab_size=64, num_local_experts=0)
    >>> check_buildable(cfg, "tiny", torch.device("cpu"))
    Traceback (most recent call last):
    ...
    runprof.errors.InvalidArgumentError: tiny: num_local_experts 0 builds MoE layers without experts ...
    """
    meta = _meta_build(config, name, dtype)
    declared = [f for cfg in (config, text_config(config)) if (f := int_field(cfg, EXPERT_FIELDS)) is not None]
    empty = [(n, tuple(p.shape)) for n, p in meta.named_parameters() if p.numel() == 0]
    if empty and any(count == 0 for _, count in declared):
        attr = next(a for a, count in declared if count == 0)
        raise InvalidArgumentError(
            f"{name}: {attr} 0 builds MoE layers without experts ({empty[0][0]} has shape {list(empty[0][1])}); "
            f"set {attr} to at least the top-k, or use a dense config"
        )
    need = sum(t.numel() * t.element_size() for t in [*meta.parameters(), *meta.buffers()])
    have = available_bytes(dev)
    if have is not None and need > have:
        params = sum(p.numel() for p in meta.parameters())
        raise InvalidArgumentError(
            f"{name}: random weights need {_size(need)} ({params:,} parameters) on {dev}, which has {_size(have)} "
            "available; use --num-layers N, --dtype bf16 or a smaller config (`python -m runprof count` needs none)"
        )


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
