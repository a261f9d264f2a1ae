"""Sizes and names of tensors: the one place that knows a tensor's logical count, bytes and dtype name.

A leaf module (it imports torch only), used by static counts, discovery, the memory ledger and snapshots.
bitsandbytes stores a 4-bit weight as a uint8 tensor with two values per byte: ``numel()`` is half the
logical count, and ``weight.quant_state.shape`` is the logical shape. Its bytes are the packed storage plus
the quantization state (absmax, code, nested state).

>>> import torch
>>> dtype_name(torch.zeros(2, dtype=torch.bfloat16)), dtype_name(torch.float32), shape_numel((2, 3, 4))
('bfloat16', 'float32', 24)
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch


def shape_numel(shape: Iterable[int]) -> int:
    """Number of elements of a tensor of ``shape`` (1 for a scalar's ``()``)."""
    return math.prod(int(d) for d in shape)


def logical_numel(p: torch.Tensor) -> int:
    """Number of logical values in ``p`` (the unpacked count for a bitsandbytes 4-bit weight)."""
    state = getattr(p, "quant_state", None)
    shape = getattr(state, "shape", None)
    if shape is not None:
        return shape_numel(shape)
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


def dtype_name(x: torch.Tensor | torch.dtype) -> str:
    """``"bfloat16"`` for a bf16 tensor or for ``torch.bfloat16``; packed 4-bit weights report their quant
    type (``"nf4"``)."""
    if isinstance(x, torch.Tensor):
        qtype = getattr(getattr(x, "quant_state", None), "quant_type", None)
        if qtype:
            return str(qtype)
        x = x.dtype
    return str(x).removeprefix("torch.")


__all__ = ["dtype_name", "logical_numel", "shape_numel", "tensor_bytes"]
