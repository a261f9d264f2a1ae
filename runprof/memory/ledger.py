"""The memory ledger: static bytes, the torch allocator and NVML, with every gap named.

Rows marked ``part`` add up to the ``nvml_used`` total (this process's GPU memory as NVML sees it):

    weights + buffers + other_at_load + kv_cache + other_after_run + allocator_slack
      + cuda_context_and_other = nvml_used

where ``other_at_load`` = torch allocated at start − weights − buffers, ``other_after_run`` = allocated at the
end − allocated at start − kv_cache (tensors the run left alive: logits, outputs), ``allocator_slack`` =
reserved − allocated, ``cuda_context_and_other`` = NVML used − reserved (CUDA context, cuBLAS workspaces,
other libraries). The last is the named remainder. Information rows (``part`` false) sit beside them:
``torch_allocated`` (after load), ``kv_cache_estimate`` (from the config), ``activations_peak`` (peak
allocated during the run − allocated at start), ``nvml_peak``, ``nvml_device_used`` (every process: the
figure left where a container hides this process from NVML) and ``nvml_device_total``. On CPU the GPU rows
are null with the reason, and ``process_rss``/``process_rss_peak`` come from /proc.

A model on several GPUs (accelerate's ``device_map``) gets one ledger per device in ``devices`` (each device's
resident weights, buffers and cache tensors against that device's allocator and NVML figures) and, in
``rows``, their total: each row summed over the devices (null when any device's figure is). ``weights`` counts
the parameters resident where the ledger looks (the GPUs; on CPU every non-meta parameter) and
``weights_offloaded`` the rest (parameters on ``meta`` that accelerate loads at each forward from CPU or
disk, or left on the CPU): the two add up to the static parameter bytes.
"""
from __future__ import annotations

from collections.abc import Mapping
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
    nvml_device_used: Reading = field(default_factory=lambda: Reading(None, "not read"))


def bytes_by_device(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(parameter bytes, buffer bytes) of the unique tensors on each device (``meta``: not resident)."""
    out: dict[str, list[int]] = {}
    for p in model.parameters():
        out.setdefault(str(p.device), [0, 0])[0] += tensor_bytes(p)
    for b in model.buffers():
        out.setdefault(str(b.device), [0, 0])[1] += b.numel() * b.element_size()
    return {k: (v[0], v[1]) for k, v in out.items()}


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


def kv_estimate(config: Any, positions: int, element_size: int, batch: int = 1) -> tuple[int | None, str]:
    """The KV cache a config implies for ``batch`` sequences of ``positions`` cached tokens.

    Per attention layer and token: 2 · kv_heads · head_dim values, or for multi-head latent attention
    (``kv_lora_rank``) the latent and the rope key, kv_lora_rank + qk_rope_head_dim, as transformers caches
    them. Sliding-window layers (``layer_types``, or ``sliding_window`` on every layer when the config has no
    ``layer_types``) keep at most window − 1 tokens; layers with other state (linear attention, Mamba) count 0.

    >>> from transformers import MistralConfig
    >>> kv_estimate(MistralConfig(num_hidden_layers=2, num_key_value_heads=2, head_dim=16, sliding_window=8), 24, 4)[0]
    3584
    """
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    try:
        layers = getattr(cfg, "num_hidden_layers", None)
        heads = getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", None)
        head_dim = getattr(cfg, "head_dim", None) or (
            cfg.hidden_size // cfg.num_attention_heads if getattr(cfg, "num_attention_heads", None) else None)
        latent, rope = getattr(cfg, "kv_lora_rank", None), getattr(cfg, "qk_rope_head_dim", None)
        types = getattr(cfg, "layer_types", None)
        window = getattr(cfg, "sliding_window", None)
    except Exception as e:  # noqa: BLE001 - per-layer (heterogeneous) configs refuse global attribute reads
        return None, f"config has no single head layout ({type(e).__name__}); see the measured kv_cache row"
    if isinstance(latent, int) and isinstance(rope, int):
        per_token, what = latent + rope, f"MLA: ({latent} latent + {rope} rope)"
    elif all(isinstance(x, int) for x in (heads, head_dim)):
        per_token, what = 2 * heads * head_dim, f"2 x {heads} kv heads x {head_dim} head dim"
    else:
        return None, "config lacks num_key_value_heads / head_dim"
    if not isinstance(layers, int):
        return None, "config lacks num_hidden_layers"
    if not (isinstance(types, (list, tuple)) and len(types) == layers):
        sliding = isinstance(window, int) and getattr(cfg, "use_sliding_window", True) is not False
        types = ["sliding_attention" if sliding else "full_attention"] * layers
    kept = min(positions, window - 1) if isinstance(window, int) and window > 0 else positions
    per_layer = [kept if t == "sliding_attention" else positions if "attention" in t and "linear" not in t else 0
                 for t in types]
    full, slide = sum(1 for t in per_layer if t == positions), sum(1 for t in types if t == "sliding_attention")
    other = sum(1 for t in per_layer if t == 0) if positions else 0
    note = f"{what} x {element_size} B x {batch} x ({full} layers x {positions} tokens"
    note += f" + {slide} sliding-window layers x {kept} tokens)" if slide else ")"
    if other:
        note += f"; {other} layers keep other state (linear attention, SSM): see the measured kv_cache row"
    return batch * sum(per_layer) * per_token * element_size, note


def _row(name: str, value: int | None, source: str, note: str = "", part: bool = False) -> dict[str, Any]:
    return {"name": name, "bytes": value, "source": source, "note": note, "part": part}


def _diff(a: Reading, b: Reading | int | None, what: str) -> tuple[int | None, str]:
    bv = b.value if isinstance(b, Reading) else b
    if a.value is None or bv is None:
        return None, a.reason or (b.reason if isinstance(b, Reading) else "") or f"{what} unknown"
    return a.value - bv, ""


def build_ledger(
    model: nn.Module, *, gpu: Mapping[str, GpuReadings] | None, gpu_reason: str = "", cache: Any = None,
    positions: int = 0, batch: int = 1, resident: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """The ledger as the JSON ``memory`` section: ``{"rows": [...], "devices": {...}}``.

    ``gpu`` is None (a CPU model: GPU rows null with ``gpu_reason``) or readings per device (``{"cuda:0": ...,
    "cuda:1": ...}``: each device's ledger counts the tensors on that device; ``rows`` is their total).
    ``resident`` is :func:`bytes_by_device` when the caller already has it, so the parameters are walked once."""
    by_dev = dict(resident) if resident is not None else bytes_by_device(model)
    total_params = sum(p for p, _ in by_dev.values())
    kv_by_dev = cache_bytes_by_device(cache)
    kv_note = "tensors of the cache object" if kv_by_dev is not None else "no cache object was returned: 0 bytes"
    kv_by_dev = kv_by_dev or {}
    first = next(iter(model.parameters()), None)
    config = getattr(model, "config", None)
    est, est_note = (None, "no config") if config is None else \
        kv_estimate(config, positions, first.element_size() if first is not None else 2, batch)
    if gpu is None:
        resident = {d: v for d, v in by_dev.items() if d != "meta"}
        weights = sum(p for p, _ in resident.values())
        buffers = sum(b for _, b in resident.values())
        rows = _static_rows(weights, buffers, sum(kv_by_dev.values()), kv_note, est, est_note)
        rows.append(_offloaded_row(total_params - weights, by_dev, resident))
        rss, peak = process_rss()
        reason = gpu_reason or "not a CUDA model"
        rows += [_row(n, None, s, reason, p) for n, s, p in (
            ("torch_allocated", "torch.cuda", False), ("activations_peak", "torch.cuda", False),
            ("allocator_slack", "torch.cuda", True), ("cuda_context_and_other", "nvml", True),
            ("nvml_used", "nvml", False))]
        rows += [_row("process_rss", rss.value, "/proc", rss.reason or "resident memory of this process now"),
                 _row("process_rss_peak", peak.value, "/proc", "peak resident memory of this process")]
        return {"rows": rows, "devices": {}}
    on = {d: (*by_dev.get(d, (0, 0)), kv_by_dev.get(d, 0)) for d in gpu}
    devices = {}
    for d, readings in gpu.items():
        p, b, kv = on[d]
        rows = _static_rows(p, b, kv, kv_note, None, "the config estimate is for the whole model: see the total")
        devices[d] = {"rows": rows + _gpu_rows(p + b, kv, readings)}
    total = _sum_rows([dev["rows"] for dev in devices.values()], list(devices))
    for row in total:
        if row["name"] == "kv_cache_estimate":
            row.update(bytes=est, note=est_note)
    on_gpus = sum(p for p, _, _ in on.values())
    total.insert(4, _offloaded_row(total_params - on_gpus, by_dev, gpu))
    return {"rows": total, "devices": devices}


def _static_rows(weights: int, buffers: int, kv: int, kv_note: str, est: int | None,
                 est_note: str) -> list[dict[str, Any]]:
    return [
        _row("weights", weights, "static",
             "Σ numel x element size of unique resident parameters (+ quantization state)", True),
        _row("buffers", buffers, "static", "", True),
        _row("kv_cache", kv, "cache", kv_note, True),
        _row("kv_cache_estimate", est, "static", est_note),
    ]


def _offloaded_row(offloaded: int, by_dev: dict[str, tuple[int, int]], counted: Any) -> dict[str, Any]:
    where = [f"{d}: {p} B" for d, (p, _) in sorted(by_dev.items()) if d not in counted and p]
    note = ("parameters not in this memory: " + ", ".join(where) +
            (" (meta: offloaded by accelerate to CPU or disk, loaded at each forward; see extra['placement'])"
             if "meta" in by_dev else "")) if where else "every parameter is resident"
    return _row("weights_offloaded", offloaded, "static", note)


def _gpu_rows(resident: int, kv0: int, gpu: GpuReadings) -> list[dict[str, Any]]:
    other_load, r1 = _diff(gpu.allocated_start, resident, "allocated")
    other_run, r2 = _diff(gpu.allocated_end, (gpu.allocated_start.value or 0) + kv0
                          if gpu.allocated_start.value is not None else None, "allocated")
    slack, r3 = _diff(gpu.reserved_end, gpu.allocated_end, "reserved")
    context, r4 = _diff(gpu.nvml_used, gpu.reserved_end, "NVML used")
    peak_act, r5 = _diff(gpu.peak_allocated, gpu.allocated_start, "peak")
    return [
        _row("torch_allocated", gpu.allocated_start.value, "torch.cuda", "after load, before the run"),
        _row("other_at_load", other_load, "torch.cuda", r1 or "allocated at start − weights − buffers", True),
        _row("other_after_run", other_run, "torch.cuda", r2 or "tensors alive after the run (outputs, logits)", True),
        _row("activations_peak", peak_act, "torch.cuda", r5 or "peak allocated during the run − allocated at start"),
        _row("allocator_slack", slack, "torch.cuda", r3 or "reserved − allocated", True),
        _row("cuda_context_and_other", context, "nvml", r4 or "NVML used − reserved: CUDA context, library workspaces",
             True),
        _row("nvml_used", gpu.nvml_used.value, "nvml", gpu.nvml_used.reason or "this process, as NVML sees it"),
        _row("nvml_peak", gpu.nvml_peak.value, "nvml", gpu.nvml_peak.reason or "peak polled during the run"),
        _row("nvml_device_used", gpu.nvml_device_used.value, "nvml",
             gpu.nvml_device_used.reason or "the whole device, every process on it"),
        _row("nvml_device_total", gpu.nvml_total.value, "nvml", gpu.nvml_total.reason),
    ]


def _sum_rows(ledgers: list[list[dict[str, Any]]], names: list[str]) -> list[dict[str, Any]]:
    """Row by row, the sum over devices (null with the first device's reason when any figure is null)."""
    if len(ledgers) == 1:
        return [dict(row) for row in ledgers[0]]
    total = []
    for rows in zip(*ledgers):
        values = [r["bytes"] for r in rows]
        missing = next((f"{d}: {r['note']}" for d, r in zip(names, rows) if r["bytes"] is None), None)
        total.append(_row(rows[0]["name"], None if missing else sum(values), rows[0]["source"],
                          missing or f"Σ over {', '.join(names)}", rows[0]["part"]))
    return total


def ledger_total(memory: dict[str, Any]) -> int | None:
    """Σ of the ``part`` rows (equals ``nvml_used`` when every part is known)."""
    parts = [r["bytes"] for r in memory["rows"] if r.get("part")]
    return None if any(p is None for p in parts) else sum(parts)
