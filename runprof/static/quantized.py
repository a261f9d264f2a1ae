"""Bytes of a model whose config declares a quantization, counted on the meta device.

A model built from a config on the meta device has its unquantized dtype; the checkpoint it describes stores the
quantized tensors. For the methods transformers declares in ``quantization_config``, the bytes of the tensors the
method would quantize are counted in its storage format (the logical parameter counts never change):

- ``mxfp4`` (gpt-oss): the fused experts' ``gate_up_proj``/``down_proj`` as 4-bit values plus one 8-bit scale per
  32: 17/32 byte per value;
- ``bitsandbytes`` 4-bit: ``nn.Linear`` weights as two values per byte plus one absmax per 64 values (fp32, or
  8-bit with nested quantization plus its own fp32 absmax per 256 and 256-entry code) and the 16-entry code;
  8-bit: one byte per value plus one fp32 scale per output row;
- ``fp8``: ``nn.Linear`` weights as one byte per value plus one fp32 scale per ``weight_block_size`` block;
- ``gptq`` / ``awq``: ``nn.Linear`` weights as ``bits``/8 bytes per value, plus per ``group_size`` group and output
  an fp16 scale and a ``bits``-wide zero point (gptq also keeps an int32 group index per input).

Modules named in ``modules_to_not_convert`` (glob patterns, or names matched as substrings as transformers does)
and ``llm_int8_skip_modules`` stay in their dtype. Any other method is reported as not applied: the bytes are for
the unquantized dtype, and the result says so.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Any

from torch import nn

METHODS = ("mxfp4", "bitsandbytes", "fp8", "gptq", "awq")


@dataclass(frozen=True)
class QuantPlan:
    """A declared quantization: its method and what it needs to size the stored tensors."""

    method: str
    label: str  # the dtype name the quantized bytes are booked under (mxfp4, nf4, int8, fp8, gptq-int4, ...)
    skip: tuple[str, ...]
    options: dict[str, Any]


def declared(config: Any) -> dict[str, Any] | None:
    """The config's ``quantization_config`` as a dict, or None."""
    q = getattr(config, "quantization_config", None)
    if q is None:
        return None
    if not isinstance(q, dict):
        q = q.to_dict() if hasattr(q, "to_dict") else vars(q)
    return dict(q)


def plan(config: Any) -> QuantPlan | str | None:
    """The plan for the config's declared quantization; the method's name (a string) when runprof cannot size
    it; None when nothing is declared."""
    q = declared(config)
    if q is None:
        return None
    method = str(q.get("quant_method", "")).lower()
    skip = tuple(q.get("modules_to_not_convert") or ()) + tuple(q.get("llm_int8_skip_modules") or ())
    if method == "mxfp4":
        return QuantPlan(method, "mxfp4", skip, {})
    if method == "bitsandbytes" and (q.get("load_in_4bit") or q.get("load_in_8bit")):
        four = bool(q.get("load_in_4bit"))
        label = str(q.get("bnb_4bit_quant_type", "fp4")) if four else "int8"
        return QuantPlan(method, label, skip + ("lm_head",), {"four": four,
                                                              "nested": bool(q.get("bnb_4bit_use_double_quant"))})
    if method == "fp8":
        return QuantPlan(method, "fp8", skip + ("lm_head",), {"block": q.get("weight_block_size") or [128, 128]})
    if method in ("gptq", "awq"):
        bits, group = int(q.get("bits", 4)), int(q.get("group_size", 128))
        return QuantPlan(method, f"{method}-int{bits}", skip + ("lm_head",), {"bits": bits, "group": group})
    return method or "unknown"


def _skipped(name: str, skip: tuple[str, ...]) -> bool:
    module = name.rsplit(".", 1)[0]
    return any(fnmatch.fnmatch(module, pat) or fnmatch.fnmatch(module, pat + ".*") if "*" in pat
               else pat in module for pat in skip)


def quantized_bytes(p: QuantPlan, name: str, param: Any, owner: nn.Module) -> int | None:
    """Stored bytes of parameter ``name`` under plan ``p``, or None when the method leaves it as it is."""
    if _skipped(name, p.skip):
        return None
    n = param.numel()
    leaf = name.rsplit(".", 1)[-1]
    if p.method == "mxfp4":
        return n * 17 // 32 if leaf in ("gate_up_proj", "down_proj") and param.dim() == 3 else None
    if not (isinstance(owner, nn.Linear) and leaf == "weight" and param.dim() == 2):
        return None
    out_f, in_f = param.shape
    o = p.options
    if p.method == "bitsandbytes":
        if not o["four"]:
            return n + out_f * 4
        blocks = math.ceil(n / 64)
        absmax = blocks + 4 + math.ceil(blocks / 256) * 4 + 256 * 4 if o["nested"] else blocks * 4
        return math.ceil(n / 2) + absmax + 16 * 4
    if p.method == "fp8":
        b0, b1 = o["block"]
        return n + math.ceil(out_f / b0) * math.ceil(in_f / b1) * 4
    groups = math.ceil(in_f / o["group"])
    stored = n * o["bits"] // 8 + groups * out_f * 2 + math.ceil(groups * out_f * o["bits"] / 8)
    return stored + (in_f * 4 if p.method == "gptq" else 0)


__all__ = ["METHODS", "QuantPlan", "declared", "plan", "quantized_bytes"]
