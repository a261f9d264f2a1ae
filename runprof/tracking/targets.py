"""What ``track()`` is given and where things live: the module behind a compiled wrapper or a pipeline, whether
its forward is compiled, the devices of its inputs and layers, the cache its output carries."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import TrackingError
from ..moe.layer import MoELayer


def unwrap(obj: Any) -> tuple[nn.Module, str]:
    """The module to hook: ``obj`` itself, ``torch.compile(m)``'s ``m`` (its hooks fire as the compiled module
    runs), or a transformers ``Pipeline``'s model. The second value says which (``module``, ``compiled``,
    ``pipeline``)."""
    orig = getattr(obj, "_orig_mod", None)
    if isinstance(orig, nn.Module) and type(obj).__name__ == "OptimizedModule":
        return orig, "compiled"
    model = getattr(obj, "model", None)
    if not isinstance(obj, nn.Module) and isinstance(model, nn.Module) and hasattr(obj, "tokenizer"):
        return model, "pipeline"
    if not isinstance(obj, nn.Module):
        raise TrackingError(
            f"track() takes a torch.nn.Module, a torch.compile'd module or a transformers Pipeline, not "
            f"{type(obj).__name__}")
    return obj, "module"


def compiled(model: nn.Module) -> bool:
    """True when the model's (or a submodule's) forward is a ``torch.compile``'d function."""
    return any(hasattr(getattr(m, "forward", None), "_torchdynamo_orig_callable") for m in model.modules())


def main_device(model: nn.Module) -> torch.device:
    """Where the model's inputs live: the input embedding's device, else the first parameter's (meta: cpu)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(emb, "weight", None) if isinstance(emb, nn.Module) else None
    first = weight if isinstance(weight, torch.Tensor) else next(iter(model.parameters()), None)
    if first is None or first.device.type == "meta":
        return torch.device("cpu")
    return first.device


def layer_device(layer: MoELayer, main: torch.device) -> torch.device:
    """Where a layer's routing ids appear: its experts' device (offloaded meta weights run on ``main``)."""
    module = layer.adapter.hook_module(layer) if layer.adapter.capture == "experts_pre" else layer.router
    for p in (module or layer.experts).parameters():
        return main if p.device.type == "meta" else p.device
    return main


def output_cache(output: Any) -> Any:
    """The cache object a model's output carries, read without the deprecation warning transformers 5.24 gives
    for ``past_key_values`` (renamed ``cache``): by the output class's own field names."""
    names = getattr(type(output), "__dataclass_fields__", None)
    if names is None:
        return None
    for name in ("cache", "past_key_values", "cache_params"):
        if name in names:
            return getattr(output, name, None)
    return None
