"""The KV cache: the bytes of a cache object's own tensors, and what a config implies for N tokens."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..results import Cause
from .sources import Reading


def cache_bytes_by_device(cache: Any) -> dict[str, int] | None:
    """Bytes of every distinct tensor reachable from a cache object (DynamicCache layers' keys/values,
    hybrid caches' conv/ssm states), per device; None when there is no cache."""
    if cache is None:
        return None
    seen: set[int] = set()
    out: dict[str, int] = {}
    stack: list[tuple[Any, int]] = [(cache, 0)]
    while stack:
        obj, depth = stack.pop()
        if isinstance(obj, torch.Tensor):
            if obj.device.type != "meta" and obj.data_ptr() not in seen:
                seen.add(obj.data_ptr())
                out[str(obj.device)] = out.get(str(obj.device), 0) + obj.numel() * obj.element_size()
        elif depth < 4 and isinstance(obj, (list, tuple)):
            stack += [(x, depth + 1) for x in obj]
        elif depth < 4 and isinstance(obj, dict):
            stack += [(x, depth + 1) for x in obj.values()]
        elif depth < 4 and hasattr(obj, "__dict__") and not isinstance(obj, (nn.Module, type)):
            stack += [(x, depth + 1) for x in vars(obj).values()]
    return out


def cache_bytes(cache: Any) -> int | None:
    """Bytes of every distinct tensor reachable from a cache object, or None when there is no cache."""
    per_device = cache_bytes_by_device(cache)
    return None if per_device is None else sum(per_device.values())


def _layout(cfg: Any) -> dict[str, Any] | Reading:
    try:
        heads = getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", None)
        return {
            "layers": getattr(cfg, "num_hidden_layers", None), "heads": heads,
            "head_dim": getattr(cfg, "head_dim", None) or (
                cfg.hidden_size // cfg.num_attention_heads if getattr(cfg, "num_attention_heads", None) else None),
            "latent": getattr(cfg, "kv_lora_rank", None), "rope": getattr(cfg, "qk_rope_head_dim", None),
            "types": getattr(cfg, "layer_types", None), "window": getattr(cfg, "sliding_window", None),
            "use_window": getattr(cfg, "use_sliding_window", True) is not False,
        }
    except Exception as e:  # noqa: BLE001 - per-layer (heterogeneous) configs refuse global attribute reads
        return Reading.unknown(Cause.KV_CONFIG_HETEROGENEOUS, error=type(e).__name__)


def kv_estimate(config: Any, positions: int, element_size: int, batch: int = 1) -> Reading:
    """The KV cache a config implies for ``batch`` sequences of ``positions`` cached tokens.

    Per attention layer and token: 2 · kv_heads · head_dim values, or for multi-head latent attention
    (``kv_lora_rank``) the latent and the rope key, kv_lora_rank + qk_rope_head_dim, as transformers caches
    them. Sliding-window layers (``layer_types``, or ``sliding_window`` on every layer when the config has no
    ``layer_types``) keep at most window − 1 tokens; layers with other state (linear attention, Mamba) count 0.
    The reading's detail holds the formula's numbers.

    >>> from transformers import MistralConfig
    >>> r = kv_estimate(MistralConfig(num_hidden_layers=2, num_key_value_heads=2, head_dim=16, sliding_window=8), 24, 4)
    >>> r.value, r.detail["kept"]  # 2 layers x 7 tokens x 2 x 2 heads x 16 x 4 B
    (3584, 7)
    """
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    lay = _layout(cfg)
    if isinstance(lay, Reading):
        return lay
    if isinstance(lay["latent"], int) and isinstance(lay["rope"], int):
        per_token, detail = lay["latent"] + lay["rope"], {"mla": True, "latent": lay["latent"], "rope": lay["rope"]}
    elif all(isinstance(lay[x], int) for x in ("heads", "head_dim")):
        per_token, detail = 2 * lay["heads"] * lay["head_dim"], {"mla": False, "kv_heads": lay["heads"],
                                                                  "head_dim": lay["head_dim"]}
    else:
        return Reading.unknown(Cause.KV_CONFIG_INCOMPLETE, missing="num_key_value_heads / head_dim")
    layers, types, window = lay["layers"], lay["types"], lay["window"]
    if not isinstance(layers, int):
        return Reading.unknown(Cause.KV_CONFIG_INCOMPLETE, missing="num_hidden_layers")
    if not (isinstance(types, (list, tuple)) and len(types) == layers):
        sliding = isinstance(window, int) and lay["use_window"]
        types = ["sliding_attention" if sliding else "full_attention"] * layers
    kept = min(positions, window - 1) if isinstance(window, int) and window > 0 else positions
    per_layer = [kept if t == "sliding_attention" else positions if "attention" in t and "linear" not in t else 0
                 for t in types]
    detail.update(element_size=element_size, batch=batch, positions=positions, kept=kept,
                  full_layers=sum(1 for t in types if t != "sliding_attention" and "attention" in t
                                  and "linear" not in t),
                  sliding_layers=sum(1 for t in types if t == "sliding_attention"),
                  other_layers=sum(1 for t in per_layer if t == 0) if positions else 0)
    return Reading(batch * sum(per_layer) * per_token * element_size, Cause.KV_ESTIMATE, detail)
