"""``set_top_k``: the one deliberate mutation runprof makes, and it says what it changed."""
from __future__ import annotations

import logging

from torch import nn

from ..errors import InvalidArgumentError
from .discovery import find_moe_layers

log = logging.getLogger("runprof")

_CONFIG_FIELDS = ("num_experts_per_tok", "moe_top_k", "top_k", "num_selected_experts", "moe_k", "top_k_experts")


def set_top_k(model: nn.Module, k: int) -> list[tuple[str, int, int]]:
    """Make every MoE layer of ``model`` route each token to ``k`` experts.

    Sets what each architecture really reads at forward time (router, block or experts attributes, via
    the layer's adapter) and the config field, and returns ``(attribute path, old, new)`` for each change.
    Raises :class:`InvalidArgumentError` for a dense model, k outside 1..E, or an architecture that
    hard-wires k. Call it again with the old value to restore.

    >>> from transformers import MixtralConfig, AutoModelForCausalLM
    >>> m = AutoModelForCausalLM.from_config(MixtralConfig(hidden_size=32, intermediate_size=64,
    ...     num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, vocab_size=64))
    >>> set_top_k(m, 1)
    [('model.layers.0.mlp.gate.top_k', 2, 1), ('model.layers.0.mlp.top_k', 2, 1), ('config.num_experts_per_tok', 2, 1)]
    """
    if isinstance(k, bool) or not isinstance(k, int):
        raise InvalidArgumentError(f"top-k must be an integer, got {k!r}")
    layers = find_moe_layers(model)
    if not layers:
        raise InvalidArgumentError(f"{type(model).__name__} has no MoE layers; top-k applies to MoE models only")
    limit = min(layer.num_experts for layer in layers)
    if not 1 <= k <= limit:
        raise InvalidArgumentError(f"top-k {k} is out of range: this model has {limit} experts per layer (1..{limit})")
    changes: list[tuple[str, int, int]] = []
    for layer in layers:
        changes += layer.adapter.write_top_k(layer, k)
    config = getattr(model, "config", None)
    for cfg, prefix in ((config, "config"), (getattr(config, "text_config", None), "config.text_config")):
        if cfg is None:
            continue
        for field in _CONFIG_FIELDS:
            old = getattr(cfg, field, None)
            if isinstance(old, int) and not isinstance(old, bool):
                setattr(cfg, field, k)
                changes.append((f"{prefix}.{field}", old, k))
                break
    log.info("set_top_k(%d): %d attributes changed", k, len(changes))
    return changes
