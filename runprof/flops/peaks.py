"""Published peak throughput of known GPUs: dense tensor-core FLOP/s per compute dtype (no 2:4 sparsity) and
memory bandwidth, from NVIDIA's datasheets. ``track(peak_flops=..., peak_bandwidth=...)`` overrides them; a
device not listed (a CPU) has none.

>>> p = lookup("NVIDIA H100 80GB HBM3", "bfloat16")
>>> p.entry, p.flops_per_s / 1e12, p.bytes_per_s / 1e12
('H100 SXM', 989.4, 3.35)
>>> lookup("NVIDIA GeForce RTX 4090", "float16").flops_per_s / 1e12, lookup("cpu", "float32") is None
(165.2, True)
"""
from __future__ import annotations

import re
from dataclasses import dataclass

T = 1e12


@dataclass(frozen=True)
class GpuPeak:
    """One device: a name pattern, dense FLOP/s per compute dtype, bytes/s of its memory."""

    entry: str
    pattern: str  # searched in torch.cuda.get_device_name()
    flops: dict[str, float]  # "bf16", "fp16", "tf32", "fp32", "fp8" -> FLOP/s
    bytes_per_s: float


@dataclass(frozen=True)
class Peak:
    entry: str
    compute: str  # the compute dtype the figure is for
    flops_per_s: float | None  # None: this device has no figure for that dtype
    bytes_per_s: float


def _ampere(bf16: float, fp32: float, tf32: float) -> dict[str, float]:
    return {"bf16": bf16 * T, "fp16": bf16 * T, "tf32": tf32 * T, "fp32": fp32 * T}


def _hopper(bf16: float, fp32: float) -> dict[str, float]:
    return {"bf16": bf16 * T, "fp16": bf16 * T, "tf32": bf16 / 2 * T, "fp32": fp32 * T, "fp8": 2 * bf16 * T}


# Order matters: the first pattern found in the device name wins (specific before general).
GPUS: tuple[GpuPeak, ...] = (
    GpuPeak("H200 NVL", r"H200 NVL", _hopper(835.5, 60.0), 4.8 * T),
    GpuPeak("H200 SXM", r"H200", _hopper(989.4, 67.0), 4.8 * T),
    GpuPeak("H100 NVL", r"H100 NVL", _hopper(835.5, 60.0), 3.9 * T),
    GpuPeak("H100 PCIe", r"H100 PCIe", _hopper(756.5, 51.0), 2.0 * T),
    GpuPeak("H100 SXM", r"H100", _hopper(989.4, 67.0), 3.35 * T),
    GpuPeak("A100 SXM 80GB", r"A100-SXM4?-80GB", _ampere(312.0, 19.5, 156.0), 2.039 * T),
    GpuPeak("A100 PCIe 80GB", r"A100 80GB PCIe", _ampere(312.0, 19.5, 156.0), 1.935 * T),
    GpuPeak("A100 40GB", r"A100", _ampere(312.0, 19.5, 156.0), 1.555 * T),
    GpuPeak("L40S", r"L40S", {**_ampere(362.05, 91.6, 183.0), "fp8": 733.0 * T}, 0.864 * T),
    GpuPeak("L40", r"L40\b", {**_ampere(181.05, 90.5, 90.5), "fp8": 362.0 * T}, 0.864 * T),
    GpuPeak("L4", r"\bL4\b", {**_ampere(121.0, 30.3, 60.0), "fp8": 242.0 * T}, 0.300 * T),
    GpuPeak("A10", r"\bA10\b", _ampere(125.0, 31.2, 62.5), 0.600 * T),
    GpuPeak("RTX 4090", r"RTX 4090", _ampere(165.2, 82.6, 82.6), 1.008 * T),  # fp32 accumulate
    GpuPeak("RTX 3090", r"RTX 3090", _ampere(71.0, 35.6, 35.6), 0.936 * T),  # fp32 accumulate
    GpuPeak("V100 SXM2", r"V100-SXM2", {"fp16": 125.0 * T, "fp32": 15.7 * T}, 0.900 * T),
    GpuPeak("V100 PCIe", r"V100", {"fp16": 112.0 * T, "fp32": 14.0 * T}, 0.900 * T),
    GpuPeak("T4", r"\bT4\b", {"fp16": 65.0 * T, "fp32": 8.1 * T}, 0.320 * T),
)

_COMPUTE = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8"}


def compute_dtype(dtype: str, tf32: bool = False) -> str | None:
    """The peak-table column for a model of ``dtype`` (float32 matmuls on tensor cores count as tf32)."""
    c = _COMPUTE.get(dtype)
    return "tf32" if c == "fp32" and tf32 else c


def lookup(device_name: str | None, dtype: str, *, tf32: bool = False) -> Peak | None:
    """The published peaks of the device named ``device_name`` for ``dtype``; None for an unknown device."""
    if not device_name:
        return None
    for gpu in GPUS:
        if re.search(gpu.pattern, device_name):
            compute = compute_dtype(dtype, tf32) or "bf16"  # quantized weights compute in bf16
            return Peak(gpu.entry, compute, gpu.flops.get(compute), gpu.bytes_per_s)
    return None


__all__ = ["GPUS", "GpuPeak", "Peak", "compute_dtype", "lookup"]
