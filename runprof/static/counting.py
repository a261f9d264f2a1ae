"""``count_params``: exact static counts from ``named_parameters()``, on any device, meta included."""
from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections import Counter
from typing import Any

import torch
from torch import nn

from ..errors import InvalidArgumentError, UnsupportedModelError
from ..moe.discovery import check_readable, config_top_k, find_moe_layers, layer_index
from ..moe.layer import MoELayer
from ..results import (
    GROUPS,
    ByteCounts,
    CountResult,
    ModelInfo,
    MoEInfo,
    MoELayerInfo,
    ParamCounts,
    active_per_token,
)
from ..tensors import dtype_name, logical_numel, tensor_bytes
from .groups import fold_layers, group_parameters
from .quantized import plan, quantized_bytes

log = logging.getLogger("runprof")

ModelLike = Any  # nn.Module | PretrainedConfig | str | os.PathLike | dict


def build_meta_model(config: Any, dtype: torch.dtype | None = None, *, name: str | None = None) -> nn.Module:
    """The causal LM for ``config`` on the meta device: shapes and dtypes, no storage.

    Uses ``torch.device("meta")`` rather than ``accelerate.init_empty_weights`` (which allocates fused
    experts on the CPU first and unties some lm_heads). A config transformers cannot build (no causal-LM
    class, sizes that are negative, fractional, or overflow a tensor's storage) is one
    :class:`~runprof.errors.RunprofError` line naming ``name`` (the config's model_type by default).
    """
    from transformers import AutoModelForCausalLM

    from ..models.resolve import check_config

    label = name or getattr(config, "model_type", None) or type(config).__name__
    check_config(config, label)  # sizes, vocabulary, top-k: a named field rather than a transformers error
    kwargs: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")  # 0 experts: no storage
            return AutoModelForCausalLM.from_config(config, **kwargs)
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise UnsupportedModelError(
                f"{label}: model_type {getattr(config, 'model_type', '?')!r} has no causal-LM class in this "
                f"transformers version ({type(config).__name__}); runprof counts causal LMs") from e
        raise _unbuildable(label, e, dtype) from e
    except Exception as e:  # noqa: BLE001 - a config's sizes can break transformers in many ways
        raise _unbuildable(label, e, dtype) from e


def _unbuildable(label: str, e: BaseException, dtype: torch.dtype | None) -> InvalidArgumentError:
    sizes = re.search(r"sizes=\[([\d, ]+)\]", str(e))
    if sizes:
        numel = math.prod(int(d) for d in sizes[1].split(","))
        need = numel * (dtype or torch.get_default_dtype()).itemsize
        return InvalidArgumentError(
            f"{label}: one [{sizes[1]}] tensor of this config alone would need {need:.2e} bytes, more than any "
            "memory holds; check hidden_size, intermediate_size and vocab_size in the config")
    text = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return InvalidArgumentError(f"{label}: transformers cannot build this config ({type(e).__name__}: {text}); "
                                "check its sizes (hidden_size, num_attention_heads, vocab_size, ...)")


def model_name(model: nn.Module) -> str:
    """The name a model was loaded under (``config._name_or_path``), else its class name."""
    return getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__


def model_info(model: nn.Module, name: str | None = None) -> ModelInfo:
    """Name (``name``, else :func:`model_name`), class, model_type, dtype and device of ``model`` (the
    first parameter's dtype and device): the one place a :class:`ModelInfo` is built from a model.

    >>> model_info(nn.Linear(2, 2))
    ModelInfo(name='Linear', class_name='Linear', model_type='', dtype='float32', device='cpu')
    """
    config = getattr(model, "config", None)
    first = next(iter(model.parameters()), None)
    return ModelInfo(
        name=name or model_name(model),
        class_name=type(model).__name__,
        model_type=str(getattr(config, "model_type", "") or ""),
        dtype=dtype_name(first) if first is not None else "",
        device=str(first.device) if first is not None else "",
    )


def _as_model(obj: ModelLike, dtype: torch.dtype | None) -> tuple[nn.Module, str]:
    if isinstance(obj, nn.Module):
        return obj, model_name(obj)
    from transformers import PretrainedConfig

    if isinstance(obj, PretrainedConfig):
        return build_meta_model(obj, dtype), getattr(obj, "_name_or_path", "") or obj.model_type
    if isinstance(obj, dict):
        from transformers import AutoConfig

        from ..models.resolve import config_error

        data = dict(obj)
        model_type = data.pop("model_type", None)
        if not model_type or not isinstance(model_type, str):
            raise InvalidArgumentError.bad("model_or_config", obj if len(repr(obj)) < 80 else "{...}",
                                           "a config dict needs a 'model_type' key holding a string such as 'mixtral'")
        if not all(isinstance(k, str) for k in data):
            raise InvalidArgumentError(f"config dict for {model_type!r}: every key must be a string (a config field)")
        try:
            config = AutoConfig.for_model(model_type, **data)
        except Exception as e:  # noqa: BLE001 - transformers' validation of arbitrary fields raises many kinds
            raise config_error("config dict", model_type, e) from e
        return build_meta_model(config, dtype), model_type
    if isinstance(obj, (str, os.PathLike)):
        from ..models.resolve import load_config

        config, ref = load_config(obj)
        return build_meta_model(config, dtype, name=ref.name), ref.name
    raise InvalidArgumentError(
        f"count_params takes a model, a config, a config dict, a path or a hub id, not {type(obj).__name__}"
    )


def _moe_info(model: nn.Module, layers: list[MoELayer], groups: dict[str, str], unique: list[tuple[str, torch.Tensor]]) -> MoEInfo | None:
    if not layers:
        return None
    infos = []
    for layer in layers:
        prefix = layer.name + "."
        shared = sum(
            logical_numel(p) for n, p in unique if n.startswith(prefix) and groups[n] == "shared_experts"
        )
        infos.append(
            MoELayerInfo(
                name=layer.name,
                layer_index=layer.layer_index,
                experts=layer.experts_name,
                router=layer.router_name,
                num_experts=layer.num_experts,
                top_k=layer.top_k,
                params_per_expert=layer.params_per_expert,
                shared_params=shared,
            )
        )
    moe_indices = {x.layer_index for x in infos}
    decoder_indices = sorted({i for n, _ in unique if (i := layer_index(n)) is not None})
    dense = tuple(i for i in decoder_indices if i not in moe_indices)
    first = infos[0]
    return MoEInfo(
        moe_layers=len(infos),
        num_experts=first.num_experts,
        top_k=first.top_k,
        top_k_config=config_top_k(getattr(model, "config", None)),
        params_per_expert=first.params_per_expert,
        dense_layers=dense,
        shared_experts_params=sum(x.shared_params for x in infos),
        layers=tuple(infos),
    )


def count_params(model_or_config: ModelLike, *, dtype: torch.dtype | None = None, name: str | None = None) -> CountResult:
    """Exact static counts of a causal LM, from a model (any device, meta included) or a config.

    ``model_or_config`` may be a model, a ``PretrainedConfig``, a config dict, a ``config.json`` path, a
    model directory, an alias (``"mixtral"``) or a hub id (config only). Configs are built on the meta
    device: no weights are read or allocated.

    >>> from transformers import MixtralConfig
    >>> r = count_params(MixtralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                                num_attention_heads=4, num_key_value_heads=2, vocab_size=128))
    >>> r.params.by_group["routed_experts"]  # 2 layers x 8 experts x 3 x 32 x 64
    98304
    """
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise InvalidArgumentError.bad("dtype", dtype, "expected a torch dtype such as torch.bfloat16, or None (the "
                                       "config's own)")
    if name is not None and not isinstance(name, str):
        raise InvalidArgumentError.bad("name", name, "expected a string (the name the report shows)")
    model, default_name = _as_model(model_or_config, dtype)
    layers = find_moe_layers(model)
    try:
        check_readable(model, layers)
    except UnsupportedModelError as e:
        log.warning("%s; counts below treat it as dense", e)
    return count_model(model, layers, name=name or default_name)


def count_model(model: nn.Module, layers: list[MoELayer], *, name: str) -> CountResult:
    """:func:`count_params` for a live model whose MoE layers were already found (the tracker's path)."""
    groups, unique, tied = group_parameters(model, layers)

    by_group = dict.fromkeys(GROUPS, 0)
    for n, p in unique:
        by_group[groups[n]] += logical_numel(p)
    by_dtype, quantization = _bytes_by_dtype(model, unique)
    total = sum(by_group.values())
    buffers = [b for _, b in model.named_buffers()]
    tied_lm_head = _lm_head_tied(model)

    params = ParamCounts(
        total=total,
        by_group=by_group,
        active_per_token=active_per_token(total, by_group, layers, tied_lm_head),
        tied=tuple(tied),
        by_layer_pattern=fold_layers(unique),
        buffers=sum(b.numel() for b in buffers),
        lm_head_tied=tied_lm_head,
    )
    nbytes = ByteCounts(
        total=sum(by_dtype.values()),
        by_dtype=dict(by_dtype),
        buffers=sum(b.numel() * b.element_size() for b in buffers),
        quantization=quantization,
    )
    return CountResult(model=model_info(model, name), params=params, moe=_moe_info(model, layers, groups, unique), bytes=nbytes)


def _bytes_by_dtype(model: nn.Module, unique: list[tuple[str, torch.Tensor]]) -> tuple[Counter[str], dict | None]:
    """Bytes per dtype; for a model on the meta device whose config declares a quantization, the tensors the
    method quantizes are counted as the checkpoint stores them (:mod:`runprof.static.quantized`)."""
    by_dtype: Counter[str] = Counter()
    q = plan(getattr(model, "config", None))
    meta = all(p.device.type == "meta" for _, p in unique)
    if q is None or not meta:
        for _, p in unique:
            by_dtype[dtype_name(p)] += tensor_bytes(p)
        return by_dtype, None if q is None else {"method": q if isinstance(q, str) else q.method,
                                                  "applied": False, "quantized_params": 0, "reason": "loaded"}
    if isinstance(q, str):
        for _, p in unique:
            by_dtype[dtype_name(p)] += tensor_bytes(p)
        return by_dtype, {"method": q, "applied": False, "quantized_params": 0, "reason": "not_sized"}
    modules = dict(model.named_modules())
    quantized = 0
    for n, p in unique:
        stored = quantized_bytes(q, n, p, modules.get(n.rsplit(".", 1)[0] if "." in n else ""))
        if stored is None:
            by_dtype[dtype_name(p)] += tensor_bytes(p)
        else:
            by_dtype[q.label] += stored
            quantized += p.numel()
    return by_dtype, {"method": q.method, "applied": True, "quantized_params": quantized, "reason": None}


def _lm_head_tied(model: nn.Module) -> bool:
    if not (hasattr(model, "get_output_embeddings") and hasattr(model, "get_input_embeddings")):
        return False
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    return isinstance(out, nn.Module) and isinstance(inp, nn.Module) and getattr(out, "weight", None) is getattr(inp, "weight", 1)
