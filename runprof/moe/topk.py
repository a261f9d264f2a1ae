"""``set_top_k``: the one deliberate mutation runprof makes, and it says what it changed."""
from __future__ import annotations

import logging

from torch import nn

from ..errors import InvalidArgumentError
from .discovery import config_top_k_fields, find_moe_layers

log = logging.getLogger("runprof")


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
    for cfg, path, field in config_top_k_fields(getattr(model, "config", None)):
        changes.append((f"{path}.{field}", getattr(cfg, field), k))
        setattr(cfg, field, k)
    log.info("set_top_k(%d): %d attributes changed", k, len(changes))
    return changes
