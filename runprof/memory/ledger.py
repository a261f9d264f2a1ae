"""The memory ledger: static bytes, the torch allocator and NVML, with every gap named.

Rows marked ``part`` add up to the ``nvml_used`` total (this process's GPU memory as NVML sees it):

    weights + buffers + other_at_load + kv_cache + other_after_run + allocator_slack
      + cuda_context_and_other = nvml_used

where ``other_at_load`` = torch allocated at start − weights − buffers, ``other_after_run`` = allocated at the
end − allocated at start − kv_cache (tensors the run left alive: logits, outputs), ``allocator_slack`` =
reserved − allocated, ``cuda_context_and_other`` = NVML used − reserved (CUDA context, cuBLAS workspaces,
other libraries). The last is the named remainder. Information rows (``part`` false) sit beside them:
``torch_allocated`` (after load), ``kv_cache_estimate`` (from the config), ``activations_peak`` (peak
allocated during the run − allocated at start), ``nvml_peak`` and ``nvml_device_total``. On CPU the GPU rows
are null with the reason, and ``process_rss``/``process_rss_peak`` come from /proc.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..static.quant import tensor_bytes
from .sources import Reading, process_rss


@dataclass
class GpuReadings:
    """What the torch allocator and NVML said for one device (injectable in tests)."""

    allocated_start: Reading
    allocated_end: Reading
    reserved_end: Reading
    peak_allocated: Reading
    nvml_used: Reading
    nvml_peak: Reading = field(default_factory=lambda: Reading(None, "not polled"))
    nvml_total: Reading = field(default_factory=lambda: Reading(None, "not read"))


def weight_bytes(model: nn.Module) -> tuple[int, int]:
    """(parameter bytes of unique tensors incl. quantization state, buffer bytes)."""
    params = sum(tensor_bytes(p) for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return params, buffers


def cache_bytes(cache: Any) -> int | None:
    """Bytes of every distinct tensor reachable from a cache object (DynamicCache layers' keys/values,
    hybrid caches' conv/ssm states), or None when there is no cache."""
    if cache is None:
        return None
    seen: set[int] = set()
    total = 0
    stack: list[tuple[Any, int]] = [(cache, 0)]
    while stack:
        obj, depth = stack.pop()
        if isinstance(obj, torch.Tensor):
            if obj.device.type != "meta" and obj.data_ptr() not in seen:
                seen.add(obj.data_ptr())
                total += obj.numel() * obj.element_size()
        elif depth < 4 and isinstance(obj, (list, tuple)):
            stack += [(x, depth + 1) for x in obj]
        elif depth < 4 and isinstance(obj, dict):
            stack += [(x, depth + 1) for x in obj.values()]
        elif depth < 4 and hasattr(obj, "__dict__") and not isinstance(obj, (nn.Module, type)):
            stack += [(x, depth + 1) for x in vars(obj).values()]
    return total


def kv_estimate(config: Any, tokens_cached: int, element_size: int) -> tuple[int | None, str]:
    """2 · layers · kv_heads · head_dim · tokens · bytes from the config (full attention assumed)."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    try:
        layers = getattr(cfg, "num_hidden_layers", None)
        heads = getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", None)
        head_dim = getattr(cfg, "head_dim", None) or (
            cfg.hidden_size // cfg.num_attention_heads if getattr(cfg, "num_attention_heads", None) else None)
    except Exception as e:  # noqa: BLE001 - per-layer (heterogeneous) configs refuse global attribute reads
        return None, f"config has no single head layout ({type(e).__name__}); see the measured kv_cache row"
    if not all(isinstance(x, int) for x in (layers, heads, head_dim)):
        return None, "config lacks num_hidden_layers / num_key_value_heads / head_dim"
    note = f"2 x {layers} layers x {heads} kv heads x {head_dim} head dim x {tokens_cached} tokens x {element_size} B"
    if getattr(cfg, "kv_lora_rank", None) or getattr(cfg, "sliding_window", None) or getattr(cfg, "layer_types", None):
        note += " (MLA, sliding-window or hybrid layers make the real cache differ)"
    return 2 * layers * heads * head_dim * tokens_cached * element_size, note


def _row(name: str, value: int | None, source: str, note: str = "", part: bool = False) -> dict[str, Any]:
    return {"name": name, "bytes": value, "source": source, "note": note, "part": part}


def _diff(a: Reading, b: Reading | int | None, what: str) -> tuple[int | None, str]:
    bv = b.value if isinstance(b, Reading) else b
    if a.value is None or bv is None:
        return None, a.reason or (b.reason if isinstance(b, Reading) else "") or f"{what} unknown"
    return a.value - bv, ""


def build_ledger(
    model: nn.Module, *, gpu: GpuReadings | None, gpu_reason: str = "", cache: Any = None, tokens_cached: int = 0,
    static_bytes: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The ledger as the JSON ``memory`` section: ``{"rows": [...], "devices": {...}}``.

    ``static_bytes`` is (parameter bytes, buffer bytes) when the caller already counted them (the tracker
    passes its static counts), so the weights are not walked a second time."""
    weights, buffers = static_bytes if static_bytes is not None else weight_bytes(model)
    kv = cache_bytes(cache)
    first = next(iter(model.parameters()), None)
    est, est_note = kv_estimate(getattr(model, "config", None), tokens_cached, first.element_size() if first is not None else 2) \
        if getattr(model, "config", None) is not None else (None, "no config")
    rows = [
        _row("weights", weights, "static", "Σ numel x element size of unique parameters (+ quantization state)", True),
        _row("buffers", buffers, "static", "", True),
        _row("kv_cache", kv or 0, "cache",
             "tensors of the cache object" if kv is not None else "no cache object was returned: 0 bytes", True),
        _row("kv_cache_estimate", est, "static", est_note),
    ]
    if gpu is None:
        rss, peak = process_rss()
        reason = gpu_reason or "not a CUDA model"
        rows += [_row(n, None, s, reason, p) for n, s, p in (
            ("torch_allocated", "torch.cuda", False), ("activations_peak", "torch.cuda", False),
            ("allocator_slack", "torch.cuda", True), ("cuda_context_and_other", "nvml", True),
            ("nvml_used", "nvml", False))]
        rows += [_row("process_rss", rss.value, "/proc", rss.reason or "resident memory of this process now"),
                 _row("process_rss_peak", peak.value, "/proc", "peak resident memory of this process")]
        return {"rows": rows, "devices": {}}
    kv0 = kv or 0
    other_load, r1 = _diff(gpu.allocated_start, weights + buffers, "allocated")
    other_run, r2 = _diff(gpu.allocated_end, (gpu.allocated_start.value or 0) + kv0
                          if gpu.allocated_start.value is not None else None, "allocated")
    slack, r3 = _diff(gpu.reserved_end, gpu.allocated_end, "reserved")
    context, r4 = _diff(gpu.nvml_used, gpu.reserved_end, "NVML used")
    peak_act, r5 = _diff(gpu.peak_allocated, gpu.allocated_start, "peak")
    rows += [
        _row("torch_allocated", gpu.allocated_start.value, "torch.cuda", "after load, before the run"),
        _row("other_at_load", other_load, "torch.cuda", r1 or "allocated at start − weights − buffers", True),
        _row("other_after_run", other_run, "torch.cuda", r2 or "tensors alive after the run (outputs, logits)", True),
        _row("activations_peak", peak_act, "torch.cuda", r5 or "peak allocated during the run − allocated at start"),
        _row("allocator_slack", slack, "torch.cuda", r3 or "reserved − allocated", True),
        _row("cuda_context_and_other", context, "nvml", r4 or "NVML used − reserved: CUDA context, library workspaces",
             True),
        _row("nvml_used", gpu.nvml_used.value, "nvml", gpu.nvml_used.reason or "this process, as NVML sees it"),
        _row("nvml_peak", gpu.nvml_peak.value, "nvml", gpu.nvml_peak.reason or "peak polled during the run"),
        _row("nvml_device_total", gpu.nvml_total.value, "nvml", gpu.nvml_total.reason),
    ]
    return {"rows": rows, "devices": {}}


def ledger_total(memory: dict[str, Any]) -> int | None:
    """Σ of the ``part`` rows (equals ``nvml_used`` when every part is known)."""
    parts = [r["bytes"] for r in memory["rows"] if r.get("part")]
    return None if any(p is None for p in parts) else sum(parts)
