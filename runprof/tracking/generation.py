"""What ``generate()`` was asked to do, read from its own frame when a prefill starts (observation only).

A forward pre-hook sees rows, not sequences: beam search and ``num_return_sequences`` multiply the rows, and a
row that produced EOS keeps being computed (fed pad ids) until every row is done. ``generate()``'s resolved
``generation_config`` (its defaults merged with the call's keyword arguments) says how: the prefill hook walks
up the Python stack once per generation to the ``generate`` frame and reads it. Nothing is changed, and a
forward loop that is not ``generate()`` simply finds no frame.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch

_MAX_DEPTH = 40


@dataclass(frozen=True)
class GenerationInfo:
    """The parts of one ``generate()`` call's config that shape its rows."""

    num_beams: int
    num_return_sequences: int
    max_new_tokens: int | None
    min_new_tokens: int | None
    eos: torch.Tensor | None  # the EOS ids, on the model's device (generate's own ``_eos_token_tensor``)

    @property
    def expansion(self) -> int:
        """Rows per prompt: beams, or copies for ``num_return_sequences`` when sampling."""
        return self.num_beams if self.num_beams > 1 else self.num_return_sequences


def _int(value: Any, default: int | None) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else default


def find_generation(max_depth: int = _MAX_DEPTH) -> GenerationInfo | None:
    """The :class:`GenerationInfo` of the ``generate()`` call this forward runs inside, or None."""
    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None
        if frame.f_code.co_name == "generate":
            config = frame.f_locals.get("generation_config")
            if config is not None and hasattr(config, "num_beams"):
                eos = getattr(config, "_eos_token_tensor", None)
                return GenerationInfo(
                    num_beams=_int(getattr(config, "num_beams", 1), 1) or 1,
                    num_return_sequences=_int(getattr(config, "num_return_sequences", 1), 1) or 1,
                    max_new_tokens=_int(getattr(config, "max_new_tokens", None), None),
                    min_new_tokens=_int(getattr(config, "min_new_tokens", None), None),
                    eos=eos.reshape(-1) if isinstance(eos, torch.Tensor) and eos.numel() else None,
                )
        frame = frame.f_back
    return None


__all__ = ["GenerationInfo", "find_generation"]
