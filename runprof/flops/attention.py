"""The attention cores of a model (QKᵀ and AV), read from the modules and the config's layer types, and their
FLOPs and KV reads for one forward call of known shape.

A softmax attention module is one with an integer ``layer_idx`` and ``is_causal = True`` (what transformers'
attention classes set; linear attention, Mamba and short convolutions do not). Its kind is the cache layer type
transformers builds for that layer (``get_layer_types_and_kwargs``): full, sliding window or chunked (hybrid
layers count as their attention half). Other kinds (indexed/sparse, compressed, KV-shared) are *not covered*.

Per (query row, key) pair the core costs ``2·H·(D_qk + D_v)`` FLOPs (H query heads: the output projection's
input width ÷ D_v). Two conventions per call of ``seq`` queries per row, ``past`` cached positions before it:

- **causal** (what MFU counts): each query attends the keys its mask lets through — position p attends p + 1
  keys (full), min(p + 1, W) (sliding window W), (p mod C) + 1 (chunked, chunk C);
- **eager**: the whole ``seq × keys`` matrix the eager path multiplies, keys = past + seq (full) or
  min(past, W − 1) + seq (transformers' dynamic sliding-window cache keeps W − 1 positions; chunked alike).

Attention sinks (gpt-oss) add a logit per head, no matmul: the layer's own kind decides. MLA (DeepSeek) caches
the latent and expands it with ``kv_b_proj`` on every cached position at every call: that projection's rows are
the keys, and the KV read is the latent (kv_lora_rank + rope dims) per position.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

log = logging.getLogger("runprof")

_OUT = ("o_proj", "out_proj", "dense", "wo", "c_proj", "o")
_FUSED_QKV = ("qkv_proj", "Wqkv", "query_key_value", "c_attn", "qkv")
_KINDS = {"full_attention": "full", "hybrid": "full", "sliding_attention": "sliding", "hybrid_sliding": "sliding",
          "chunked_attention": "chunked"}


@dataclass(frozen=True)
class AttentionCore:
    """One softmax attention layer: its kind, window, FLOPs per (query, key) pair and KV bytes per position."""

    name: str
    layer_idx: int
    kind: str  # "full", "sliding" or "chunked"
    window: int | None  # W (sliding) or C (chunked)
    flops_per_pair: int  # 2 · H · (D_qk + D_v)
    kv_bytes_per_position: int  # what one cached position costs to read (K and V, or MLA's latent)
    latent: bool = False  # MLA: the cache holds the latent, kv_b_proj expands every key position

    def keys(self, past: int, seq: int) -> int:
        """Keys the eager path multiplies against each query of a call (transformers' dynamic cache)."""
        if self.kind == "full" or self.window is None:
            return past + seq
        return min(past, self.window - 1) + seq

    def keys_sum(self, past: int, seq: int, count: int) -> int:
        """Σ of :meth:`keys` over ``count`` calls of ``seq`` positions, the first after ``past`` cached ones and
        each next one ``seq`` later (a decode run), in closed form.

        >>> core = AttentionCore("a", 0, "sliding", 4, 1, 1)
        >>> core.keys_sum(1, 1, 5) == sum(core.keys(1 + i, 1) for i in range(5))
        True
        """
        if self.kind == "full" or self.window is None:
            return count * (past + seq) + seq * count * (count - 1) // 2
        w1 = self.window - 1
        if seq <= 0:
            return count * min(past, w1)
        below = 0 if past >= w1 else min(count, -(-(w1 - past) // seq))  # calls whose past is under the window
        return below * past + seq * below * (below - 1) // 2 + (count - below) * w1 + count * seq

    def attended(self, past: int, seq: int) -> int:
        """Σ over the call's ``seq`` queries (positions past .. past + seq − 1) of the keys each attends."""
        lo, hi = past, past + seq
        if self.kind == "full" or self.window is None:
            return (hi * (hi + 1) - lo * (lo + 1)) // 2
        w = self.window
        if self.kind == "sliding":
            cut = min(max(w - 1, lo), hi)  # positions below w - 1 attend p + 1 keys, the rest w
            return (cut * (cut + 1) - lo * (lo + 1)) // 2 + (hi - cut) * w
        total, p = 0, lo
        while p < hi:  # chunked: (p mod C) + 1, one chunk at a time
            end = min(hi, (p // w + 1) * w)
            a, b = p % w, (end - 1) % w + 1
            total += (b * (b + 1) - a * (a + 1)) // 2
            p = end
        return total


def layer_types(config: Any) -> tuple[list[str], list[dict[str, Any]]] | None:
    """transformers' cache layer types and their kwargs (sliding window / chunk size) per decoder layer."""
    if config is None:
        return None
    cfg = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    try:
        from transformers.cache_utils import get_layer_types_and_kwargs

        types, kwargs = get_layer_types_and_kwargs(cfg)
        return list(types), list(kwargs)
    except Exception as e:  # noqa: BLE001 - older transformers, or a config without per-layer views
        log.debug("runprof flops: no per-layer types from transformers (%s); reading the config", e)
    n = getattr(cfg, "num_hidden_layers", None)
    types = getattr(cfg, "layer_types", None)
    window = getattr(cfg, "sliding_window", None)
    if not isinstance(n, int):
        return None
    if not (isinstance(types, (list, tuple)) and len(types) == n):
        types = ["sliding_attention" if isinstance(window, int) else "full_attention"] * n
    return list(types), [{"sliding_window": window} for _ in types]


def is_softmax_attention(module: nn.Module) -> bool:
    return isinstance(getattr(module, "layer_idx", None), int) and getattr(module, "is_causal", None) is True and \
        isinstance(getattr(module, "qk_head_dim", None) or getattr(module, "head_dim", None), int)


def _child_linear(module: nn.Module, names: tuple[str, ...]) -> nn.Module | None:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Module) and isinstance(getattr(child, "in_features", None), int):
            return child
    return None


def _element_size(module: nn.Module) -> int:
    for p in module.parameters():
        if p.is_floating_point():
            return p.element_size()
    return 2


def _kv_bytes(module: nn.Module, heads: int, d_qk: int, d_v: int) -> tuple[int, bool]:
    size = _element_size(module)
    latent = _child_linear(module, ("kv_a_proj_with_mqa",))
    if latent is not None and hasattr(module, "kv_b_proj"):
        return latent.out_features * size, True
    k, v = _child_linear(module, ("k_proj", "key")), _child_linear(module, ("v_proj", "value"))
    if k is not None and v is not None:
        return (k.out_features + v.out_features) * size, False
    fused = _child_linear(module, _FUSED_QKV)
    if fused is not None and d_qk == d_v:
        return (fused.out_features - heads * d_qk) * size, False
    kv_heads = getattr(module, "num_key_value_heads", None) or getattr(
        getattr(module, "config", None), "num_key_value_heads", None) or heads
    return int(kv_heads) * (d_qk + d_v) * size, False


def attention_core(name: str, module: nn.Module, types: tuple[list[str], list[dict[str, Any]]] | None
                   ) -> AttentionCore | None:
    """The core of one softmax attention module, or None when its kind is not one runprof counts."""
    idx = module.layer_idx
    if types is None or not 0 <= idx < len(types[0]) or types[0][idx] not in _KINDS:
        return None
    kind = _KINDS[types[0][idx]]
    window = types[1][idx].get("sliding_window") if kind != "full" else None
    if kind != "full" and not isinstance(window, int):
        return None
    d_qk = int(getattr(module, "qk_head_dim", None) or module.head_dim)
    d_v = int(getattr(module, "v_head_dim", None) or module.head_dim)
    out = _child_linear(module, _OUT)
    heads = out.in_features // d_v if out is not None else getattr(module, "num_heads", None) or getattr(
        getattr(module, "config", None), "num_attention_heads", None)
    if not isinstance(heads, int) or heads <= 0:
        return None
    kv, latent = _kv_bytes(module, heads, d_qk, d_v)
    return AttentionCore(name, idx, kind, window, 2 * heads * (d_qk + d_v), kv, latent)


__all__ = ["AttentionCore", "attention_core", "is_softmax_attention", "layer_types"]
