"""Why a figure is what it is, as codes: results hold a :class:`Cause` and the numbers behind it, and the
renderers (``runprof/renderers/causes.py``) turn them into sentences. Tests assert codes, not prose."""
from __future__ import annotations

from enum import Enum
from typing import Any, Mapping


class Cause(str, Enum):
    """Reasons of reconcile rows and memory-ledger rows; the value is what the JSON holds."""

    # reconcile: measured vs static
    NO_TOKENS = "no_tokens"  # nothing was tracked
    NOT_MEASURED = "not_measured"  # tokens ran but routing capture was off (track(routing=False))
    DENSE = "dense"  # every token uses every parameter
    EQUAL = "equal"  # every token used exactly the router's k experts in every MoE layer
    FEWER_EXPERTS_THAN_K = "fewer_experts_than_k"  # repeated, skipped or dropped experts
    K_CHANGED = "k_changed"  # routers pick k_measured, the static count assumed k_router
    DIFFERS = "differs"  # measured differs from static for no cause runprof can name
    CONFIG_K_IGNORED = "config_k_ignored"  # config k changed after loading; routers copied k at init
    ROUTING_NOT_OBSERVED = "routing_not_observed"  # routing hooks missed steps; detail: layer_steps, steps
    ROWS_MISALIGNED = "rows_misaligned"  # a layer routed other rows than the step had; detail: layer_steps
    RECOMPUTED = "recomputed"  # routing re-run inside backward (activation checkpointing); detail: calls
    NOT_GENERATE = "not_generate"  # prompt/generated tokens are generate()'s notions: no generate() call seen
    BEAM_LENGTHS = "beam_lengths"  # beam search: generate picks the returned lengths, which hooks do not see
    MIXED_EXPANSION = "mixed_expansion"  # generate() calls with different beams/num_return_sequences
    MODULES_NOT_RECORDED = "modules_not_recorded"  # unused modules are not recorded under torch.compile
    MODEL_MOVED = "model_moved"  # parameters changed device inside the region; detail: before, after
    LAYER_SUBSET = "layer_subset"  # track(layers=...): only some MoE layers captured; detail: layers, of
    STEPS_TRUNCATED = "steps_truncated"  # per-step records kept for the first max_steps; detail: kept, steps
    ALL_EXPERTS_USED = "all_experts_used"
    SOME_EXPERTS_UNUSED = "some_experts_unused"
    # memory ledger: why a figure is null, or what stands behind it
    NOT_CUDA = "not_cuda"  # the model is not on a CUDA device: no GPU rows
    NVML_UNAVAILABLE = "nvml_unavailable"  # detail: error
    NVML_PROCESS_LIST_UNAVAILABLE = "nvml_process_list_unavailable"  # detail: error
    NVML_PROCESS_HIDDEN = "nvml_process_hidden"  # detail: pid (a container's PID namespace)
    NVML_NO_READING = "nvml_no_reading"
    NOT_POLLED = "not_polled"
    NOT_READ = "not_read"
    PEAK_BEFORE_RUN = "peak_before_run"  # torch's peak was not reset and the run stayed below it
    SNAPSHOT_NOT_POLLED = "snapshot_not_polled"  # memory_ledger(): no run, no peak
    PROC_UNAVAILABLE = "proc_unavailable"  # /proc/self/status could not be read
    NO_CACHE = "no_cache"  # the run returned no cache object: 0 bytes
    NO_CONFIG = "no_config"
    KV_ESTIMATE = "kv_estimate"  # detail: the formula's numbers
    KV_CONFIG_HETEROGENEOUS = "kv_config_heterogeneous"  # per-layer configs; detail: error
    KV_CONFIG_INCOMPLETE = "kv_config_incomplete"  # detail: missing
    ESTIMATE_IN_TOTAL = "estimate_in_total"  # per-device ledgers: the estimate is the whole model's
    OFFLOADED = "offloaded"  # detail: places (bytes per place), meta (accelerate offload)
    ALL_RESIDENT = "all_resident"
    UNKNOWN_INPUT = "unknown_input"  # a difference whose other term is unknown; detail: what
    DEVICE_UNKNOWN = "device_unknown"  # a total whose device figure is null; detail: device, cause
    SUM_OVER_DEVICES = "sum_over_devices"  # detail: devices
    # FLOPs and utilization
    PEAK_UNKNOWN = "peak_unknown"  # no published peak for this device and dtype, none given
    NOT_TIMED = "not_timed"  # some forward calls were not timed: no rates


def cause_to_json(cause: Cause | None, detail: Mapping[str, Any]) -> dict[str, Any]:
    """``{"cause": "...", "detail": {...}}`` (``cause`` null when there is none)."""
    return {"cause": None if cause is None else cause.value, "detail": dict(detail)}


def cause_from_json(d: Mapping[str, Any]) -> tuple[Cause | None, dict[str, Any]]:
    return (None if d.get("cause") is None else Cause(d["cause"])), dict(d.get("detail") or {})


__all__ = ["Cause", "cause_from_json", "cause_to_json"]
