"""Logical sizes of packed quantized weights (bitsandbytes 4-bit) and their byte cost.

bitsandbytes stores a 4-bit weight as a uint8 tensor with two values per byte: ``numel()`` is half the
logical count, and ``weight.quant_state.shape`` is the logical shape. Its bytes are the packed storage plus
the quantization state (absmax, code, nested state).
"""
from __future__ import annotations

import math
from typing import Any

import torch


def logical_numel(p: torch.Tensor) -> int:
    """Number of logical values in ``p`` (the unpacked count for a bitsandbytes 4-bit weight)."""
    state = getattr(p, "quant_state", None)
    shape = getattr(state, "shape", None)
    if shape is not None:
        return math.prod(int(s) for s in shape)
    return p.numel()


def _state_tensors(state: Any, seen: set[int]) -> list[torch.Tensor]:
    if state is None or id(state) in seen:
        return []
    seen.add(id(state))
    out = []
    for attr in ("absmax", "code", "offset"):
        t = getattr(state, attr, None)
        if isinstance(t, torch.Tensor):
            out.append(t)
    out += _state_tensors(getattr(state, "state2", None), seen)
    return out


def tensor_bytes(p: torch.Tensor) -> int:
    """Bytes ``p`` occupies: numel x element size, plus any quantization state it carries."""
    own = p.numel() * p.element_size()
    state = getattr(p, "quant_state", None)
    return own + sum(t.numel() * t.element_size() for t in _state_tensors(state, set()))


def dtype_name(p: torch.Tensor) -> str:
    """``"bfloat16"`` for torch.bfloat16; packed 4-bit weights report their quant type (``"nf4"``)."""
    state = getattr(p, "quant_state", None)
    qtype = getattr(state, "quant_type", None)
    if qtype:
        return str(qtype)
    return str(p.dtype).removeprefix("torch.")
