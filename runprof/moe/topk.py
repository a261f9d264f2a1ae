"""``set_top_k``: the one deliberate mutation runprof makes; it says what it changed and can undo it."""
from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

from torch import nn

from ..errors import InvalidArgumentError
from .discovery import config_top_k_fields, find_moe_layers

log = logging.getLogger("runprof")


class TopKChange(Sequence[tuple[str, int, int]]):
    """What :func:`set_top_k` changed, as ``(attribute path, old, new)`` entries, and the means to undo it:
    :meth:`restore` (idempotent), or leave a ``with`` block."""

    def __init__(self) -> None:
        self._done: list[tuple[Any, str, str, int, int]] = []  # object, attribute, path, old, new
        self.restored = False

    def _set(self, obj: Any, attr: str, path: str, new: int) -> None:
        old = getattr(obj, attr)
        setattr(obj, attr, new)
        self._done.append((obj, attr, path, old, new))

    @property
    def changes(self) -> list[tuple[str, int, int]]:
        return [(path, int(old), new) for _, _, path, old, new in self._done]

    def restore(self) -> None:
        """Set every changed attribute back to its old value, last change first."""
        if self.restored:
            return
        for obj, attr, _path, old, _new in reversed(self._done):
            setattr(obj, attr, old)
        self.restored = True
        log.info("restored %d top-k attributes", len(self._done))

    def __enter__(self) -> TopKChange:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def __getitem__(self, i):  # type: ignore[override]  # noqa: ANN001, ANN204
        return self.changes[i]

    def __len__(self) -> int:
        return len(self._done)

    def __iter__(self) -> Iterator[tuple[str, int, int]]:
        return iter(self.changes)

    def __repr__(self) -> str:
        return f"TopKChange({self.changes!r}{', restored' if self.restored else ''})"


def set_top_k(model: nn.Module, k: int) -> TopKChange:
    """Make every MoE layer of ``model`` route each token to ``k`` experts.

    Sets what each architecture really reads at forward time (router, block or experts attributes, via
    the layer's adapter) and the config field. Transactional: every layer is checked before anything is
    written, and a failure while writing restores what was already changed. Raises
    :class:`InvalidArgumentError` for a dense model, k outside 1..E, or an architecture that hard-wires k.
    Returns a :class:`TopKChange`: the changes, and ``restore()`` (or ``with set_top_k(...)``) to undo them.

    >>> from transformers import MixtralConfig, AutoModelForCausalLM
    >>> m = AutoModelForCausalLM.from_config(MixtralConfig(hidden_size=32, intermediate_size=64,
    ...     num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, vocab_size=64))
    >>> with set_top_k(m, 1) as change:
    ...     list(change), m.model.layers[0].mlp.gate.top_k
    ([('model.layers.0.mlp.gate.top_k', 2, 1), ('model.layers.0.mlp.top_k', 2, 1), ('config.num_experts_per_tok', 2, 1)], 1)
    >>> m.model.layers[0].mlp.gate.top_k, m.config.num_experts_per_tok
    (2, 2)
    """
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"set_top_k takes a torch.nn.Module, not {type(model).__name__}")
    if isinstance(k, bool) or not isinstance(k, int):
        raise InvalidArgumentError(f"top-k must be an integer, got {k!r}")
    layers = find_moe_layers(model)
    if not layers:
        raise InvalidArgumentError(f"{type(model).__name__} has no MoE layers; top-k applies to MoE models only")
    limit = min(layer.num_experts for layer in layers)
    if not 1 <= k <= limit:
        raise InvalidArgumentError(f"top-k {k} is out of range: this model has {limit} experts per layer (1..{limit})")
    targets = [t for layer in layers for t in layer.adapter.top_k_targets(layer)]
    targets += [(cfg, field, f"{path}.{field}") for cfg, path, field in config_top_k_fields(getattr(model, "config", None))]
    change = TopKChange()
    try:
        for obj, attr, path in targets:
            change._set(obj, attr, path, k)
    except BaseException:
        change.restore()
        raise
    log.info("set_top_k(%d): %d attributes changed", k, len(change))
    return change
