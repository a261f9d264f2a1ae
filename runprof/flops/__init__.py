"""FLOPs, bytes moved and utilization of tracked runs, measured from what ran (no hook of its own).

``structure`` reads a model's FLOPs per row / per expert assignment / per attention pair once per model (cached
with the tracker's model facts); ``counting`` multiplies them by each step's rows, context and the measured expert
loads at ``stop()``; ``utilization`` turns them and the step times into FLOP/s, MFU, bytes per step and bandwidth
utilization against ``peaks`` (known GPUs' published figures).
"""
from .attention import AttentionCore, attention_core, layer_types
from .counting import count_flops, step_flops
from .peaks import GPUS, GpuPeak, Peak, lookup
from .structure import ExpertsCost, ModelFlops, Weight, analyze
from .utilization import device_name, step_bytes, utilization

__all__ = ["GPUS", "AttentionCore", "ExpertsCost", "GpuPeak", "ModelFlops", "Peak", "Weight", "analyze",
           "attention_core", "count_flops", "device_name", "layer_types", "lookup", "step_bytes", "step_flops",
           "utilization"]
