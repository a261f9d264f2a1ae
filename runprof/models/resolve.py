"""Model references: shipped aliases, local paths, hub ids, the shipped tiny model.

Resolution order for a string: a shipped alias, an existing local path (a ``config.json`` file or a model
directory), then a hub id, read from the local Hugging Face cache first and from the hub only when it is
reachable. Offline, a hub id that is not cached fails at once with one line naming the alternatives.
An empty reference is refused (it is not the working directory). :func:`check_config` refuses configs
runprof cannot run (no causal-LM class, no vocabulary, top-k outside the expert count).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError, ModelNotFoundError, RunprofError, UnsupportedModelError

log = logging.getLogger("runprof")

CONFIG_DIR = Path(__file__).parent / "configs"
TINY_MOE_DIR = Path(__file__).parent / "tiny_moe"
SHIPPED_PROMPT = Path(__file__).parent / "prompt.txt"
"""The prompt a run or bench uses when none is given (Python source, as the shipped model was trained on)."""
DEFAULT_MODEL = "tiny-moe"
EXPERT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_routed_experts")
"""Config fields holding a routed-expert count (as ``runprof.moe.discovery`` reads them)."""


@dataclass(frozen=True)
class Alias:
    hub_id: str
    config_file: str  # in runprof/models/configs/


ALIASES: dict[str, Alias] = {
    "mixtral": Alias("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b-v0.1.json"),
    "mixtral-8x7b": Alias("mistralai/Mixtral-8x7B-v0.1", "mixtral-8x7b-v0.1.json"),
    "mixtral-8x22b": Alias("mistralai/Mixtral-8x22B-v0.1", "mixtral-8x22b-v0.1.json"),
    "qwen3-30b-a3b": Alias("Qwen/Qwen3-30B-A3B", "qwen3-30b-a3b.json"),
    "qwen1.5-moe": Alias("Qwen/Qwen1.5-MoE-A2.7B", "qwen1.5-moe-a2.7b.json"),
    "olmoe": Alias("allenai/OLMoE-1B-7B-0924", "olmoe-1b-7b-0924.json"),
    "deepseek-v2-lite": Alias("deepseek-ai/DeepSeek-V2-Lite", "deepseek-v2-lite.json"),
    "gpt-oss-20b": Alias("openai/gpt-oss-20b", "gpt-oss-20b.json"),
    "mistral-7b": Alias("mistralai/Mistral-7B-Instruct-v0.2", "mistral-7b-instruct-v0.2.json"),
    "llama-2-7b": Alias("meta-llama/Llama-2-7b-hf", "llama-2-7b-hf.json"),
    "tanuki-8x8b": Alias("weblab-GENIAC/Tanuki-8x8B-dpo-v1.0", "tanuki-8x8b.json"),
}


@dataclass(frozen=True)
class ModelRef:
    """A resolved reference: where the config comes from and where weights might be."""

    name: str  # as the user wrote it
    kind: str  # "alias", "shipped", "file", "dir", "hub"
    config_source: str  # a path or a hub id
    weights_source: str | None  # a directory or hub id that may hold weights


def hub_offline() -> bool:
    """True when the Hugging Face hub cannot be reached (HF_HUB_OFFLINE set, or no DNS/route)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return True
    try:
        socket.create_connection(("huggingface.co", 443), timeout=2).close()
    except OSError:
        return True
    return False


def resolve(ref: str | os.PathLike[str] | None) -> ModelRef:
    """Resolve a model reference (``None`` means the shipped default model; an empty string is an error,
    not the working directory).

    >>> ref = resolve("mixtral")
    >>> ref.kind, ref.weights_source
    ('alias', 'mistralai/Mixtral-8x7B-Instruct-v0.1')
    >>> resolve("")
    Traceback (most recent call last):
    ...
    runprof.errors.InvalidArgumentError: an empty model reference (''): pass an alias ...
    """
    if ref is None or str(ref) == DEFAULT_MODEL:
        return ModelRef(DEFAULT_MODEL, "shipped", str(TINY_MOE_DIR / "config.json"), str(TINY_MOE_DIR))
    text = str(ref)
    if not text.strip():
        raise InvalidArgumentError(
            f"an empty model reference ({text!r}): pass an alias ({', '.join(sorted(ALIASES))}), a config.json, a "
            "model directory or a hub id (org/name), or leave it out for runprof's shipped tiny model"
        )
    if text in ALIASES:
        alias = ALIASES[text]
        return ModelRef(text, "alias", str(CONFIG_DIR / alias.config_file), alias.hub_id)
    if "\x00" in text:
        raise InvalidArgumentError(f"model reference {text!r}: a NUL character is in no alias, path or hub id")
    path = Path(text).expanduser()
    try:
        path.stat()
    except OSError as e:  # ENAMETOOLONG, ELOOP, EACCES: a path the system refuses to look at
        if e.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise ModelNotFoundError(f"{text[:80]}{'...' if len(text) > 80 else ''}: cannot look at this path "
                                     f"({e.strerror}); pass a config.json, a model directory or a hub id") from e
    if path.is_file():
        return ModelRef(text, "file", str(path), None)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{text}: directory has no config.json; pass a model directory or a config.json file")
        return ModelRef(text, "dir", str(path / "config.json"), str(path))
    looks_like_path = text.startswith((".", "/", "~")) or text.endswith(".json") or os.sep in text and text.count("/") > 1
    if looks_like_path or not text or text.count("/") > 1:
        raise ModelNotFoundError(
            f"{text}: no such file or directory; pass a config.json, a model directory, a hub id "
            f"(org/name) or an alias ({', '.join(sorted(ALIASES))})"
        )
    if "/" not in text:
        raise ModelNotFoundError(
            f"{text!r} is not a known alias, local path or hub id (org/name); aliases: "
            f"{', '.join([DEFAULT_MODEL, *sorted(ALIASES)])}"
        )
    return ModelRef(text, "hub", text, text)


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); pass a config.json") from e
    except UnicodeDecodeError as e:
        raise InvalidArgumentError(f"{path}: not UTF-8 text (byte {e.start}); pass a config.json") from e
    except RecursionError as e:
        raise InvalidArgumentError(f"{path}: JSON nested too deeply to be a config.json") from e
    except OSError as e:
        raise ModelNotFoundError(f"{path}: cannot read ({e.strerror})") from e
    if not isinstance(data, dict):
        raise InvalidArgumentError(f"{path}: a config.json holds a JSON object, this holds {type(data).__name__}")
    return data


def load_config(ref: str | os.PathLike[str] | None) -> tuple[Any, ModelRef]:
    """The transformers config for a reference, offline when the reference is local or shipped."""
    from transformers import AutoConfig

    mref = resolve(ref)
    if mref.kind == "hub":
        return _hub_config(mref), mref
    data = _read_json(mref.config_source)
    model_type = data.get("model_type")
    if not model_type or not isinstance(model_type, str):
        raise UnsupportedModelError(f"{mref.config_source}: no 'model_type' key (a string); is this a transformers "
                                    "config.json?")
    try:
        config = AutoConfig.from_pretrained(mref.config_source)
    except Exception as e:  # noqa: BLE001 - a config's values can break transformers' validation in many ways
        raise config_error(mref.config_source, model_type, e) from e
    return config, mref


def config_error(source: str, model_type: object, e: BaseException) -> RunprofError:
    """One line for a config transformers refuses to build: an unknown ``model_type``, or a field of the wrong
    type or value (``hidden_size: "abc"``), quoting transformers' own reason."""
    if isinstance(e, KeyError) or "Unrecognized model" in str(e) or "does not recognize this architecture" in str(e):
        what = f"model_type {model_type!r}" if model_type is not None else "its model_type"
        return UnsupportedModelError(
            f"{source}: {what} is not known to this transformers version; upgrade transformers or check the config")
    reason = " ".join(str(e).split()) or type(e).__name__
    field = re.search(r"Field '(\w+)' expected (\w+), got (\w+) \(value: (.{0,80}?)\)$", reason)
    if field:
        return InvalidArgumentError(f"{source}: {field[1]} {field[4]}: expected {field[2]}, got {field[3]}; fix it in "
                                    "the config")
    reason = reason if len(reason) <= 200 else reason[:197] + "..."
    return InvalidArgumentError(f"{source}: transformers refuses this config ({reason}); fix that field in the config")


def text_config(config: Any) -> Any:
    """The text sub-config (``get_text_config()``), or ``config`` itself where there is no single one."""
    try:
        return config.get_text_config() if hasattr(config, "get_text_config") else config
    except ValueError:  # several text sub-configs (encoder-decoder audio models): no single one to check
        return config


def int_field(cfg: Any, names: tuple[str, ...]) -> tuple[str, int] | None:
    """``(name, value)`` of the first of ``names`` that ``cfg`` holds as an int (bools excluded)."""
    for attr in names:
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return attr, value
    return None


def check_config(config: Any, name: str) -> None:
    """Refuse a config runprof cannot run, before any weight is read: no causal-LM class (T5, ViT), no
    vocabulary, or a top-k outside ``1..E`` for a model with E routed experts.

    >>> from transformers import MixtralConfig
    >>> check_config(MixtralConfig(num_local_experts=8, num_experts_per_tok=2), "mixtral")
    >>> check_config(MixtralConfig(num_local_experts=8, num_experts_per_tok=16), "mixtral")
    Traceback (most recent call last):
    ...
    runprof.errors.InvalidArgumentError: mixtral: num_experts_per_tok 16 is more than num_local_experts 8: ...
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from ..moe.discovery import config_top_k_fields

    remote = "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING and not remote:
        raise UnsupportedModelError(
            f"{name}: model_type {getattr(config, 'model_type', '?')!r} ({type(config).__name__}) has no causal-LM "
            "class in transformers; runprof runs and counts causal language models (decoder-only, e.g. Mixtral)"
        )
    text = text_config(config)
    vocab = getattr(text, "vocab_size", None)
    if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < 1:
        raise InvalidArgumentError(
            f"{name}: vocab_size {vocab!r}: a causal LM needs a vocabulary of at least 1 token; fix vocab_size in "
            "the config"
        )
    check_sizes(text, name)
    for cfg, _, k_attr in config_top_k_fields(config):
        k = getattr(cfg, k_attr)
        experts = int_field(cfg, EXPERT_FIELDS)
        if experts is None:
            continue
        e_attr, count = experts
        if count < 0:
            raise InvalidArgumentError(f"{name}: {e_attr} {count}: an expert count is 0 (dense) or more")
        if count >= 1 and not 1 <= k <= count:
            raise InvalidArgumentError(
                f"{name}: {k_attr} {k} is {'more than' if k > count else 'outside 1..'} {e_attr} {count}: each token "
                f"is routed to 1..{count} of a layer's experts; set {k_attr} to 1..{count} in the config"
            )


POSITIVE_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                  "max_position_embeddings")
"""Sizes a decoder needs at least 1 of, where its config has them."""
SIZES = ("intermediate_size", "moe_intermediate_size", *EXPERT_FIELDS)
"""Sizes that may be 0 (no dense MLP, no experts) but never negative or fractional."""
MAX_LAYERS = 2048
"""More decoder layers than this is refused: published models have under 200, and building 10**12 layers on
the meta device would never finish (about 3 ms a layer)."""


def _field(cfg: Any, attr: str) -> Any:
    """``cfg.attr``, or None where it is unset or not one value (per-layer fields of heterogeneous configs raise)."""
    try:
        return getattr(cfg, attr, None)
    except Exception:  # noqa: BLE001 - transformers' AmbiguousGlobalPerLayerAttributeError and kin
        return None


def check_sizes(cfg: Any, name: str) -> None:
    """Refuse a size field that is not a whole number, is negative (below 1 where a decoder needs one), or a
    layer count no machine could build; per-layer lists and unset (None) fields are left to transformers.

    >>> from transformers import MixtralConfig
    >>> check_sizes(MixtralConfig(num_hidden_layers=0), "tiny")
    Traceback (most recent call last):
    ...
    runprof.errors.InvalidArgumentError: tiny: num_hidden_layers 0: must be at least 1; fix it in the config
    """
    for attr in (*POSITIVE_SIZES, *SIZES):
        value = _field(cfg, attr)
        if value is None or isinstance(value, (list, tuple, dict)):
            continue
        least = 1 if attr in POSITIVE_SIZES else 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgumentError(f"{name}: {attr} {value!r}: must be a whole number (at least {least}); fix it "
                                       "in the config")
        if value < least:
            raise InvalidArgumentError(f"{name}: {attr} {value}: must be at least {least}; fix it in the config")
    layers = _field(cfg, "num_hidden_layers")
    if isinstance(layers, int) and layers > MAX_LAYERS:
        raise InvalidArgumentError(f"{name}: num_hidden_layers {layers:,}: more than {MAX_LAYERS:,} decoder layers "
                                   "(published models have under 200); fix it in the config")
    heads, kv = _field(cfg, "num_attention_heads"), _field(cfg, "num_key_value_heads")
    if isinstance(heads, int) and isinstance(kv, int) and heads % kv:
        raise InvalidArgumentError(f"{name}: num_key_value_heads {kv} does not divide num_attention_heads {heads} "
                                   "(each key/value head serves a whole group of query heads); fix it in the config")
    hidden = _field(cfg, "hidden_size")
    if isinstance(heads, int) and isinstance(hidden, int) and not _field(cfg, "head_dim") and hidden < heads:
        raise InvalidArgumentError(f"{name}: hidden_size {hidden} is less than num_attention_heads {heads} (a head "
                                   "would have 0 dimensions); fix hidden_size or num_attention_heads in the config")


def _hub_config(mref: ModelRef) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(mref.config_source, local_files_only=True)
    except (OSError, ValueError) as cached_error:
        if hub_offline():
            raise ModelNotFoundError(
                f"{mref.name}: not in the local Hugging Face cache and the hub is unreachable; use an alias "
                f"({', '.join(sorted(ALIASES))}), a local config.json or model directory"
            ) from cached_error
    except Exception as e:  # noqa: BLE001 - a cached config transformers' validation refuses
        raise config_error(mref.name, None, e) from e
    try:
        return AutoConfig.from_pretrained(mref.config_source)
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(f"{mref.name}: cannot load its config from the hub ({str(e).splitlines()[0]})") from e
    except Exception as e:  # noqa: BLE001
        raise config_error(mref.name, None, e) from e
