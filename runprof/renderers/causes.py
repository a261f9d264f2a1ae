"""Sentences for cause codes (:class:`~runprof.results.Cause`), ledger rows and reconcile quantities."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from ..results import Cause
from .format import n

QUANTITIES: dict[str, str] = {
    "active_params_per_token": "active params per token (all)",
    "experts_per_token": "experts per token per MoE layer",
    "active_params_per_token_at_config_k": "active params per token at config k",
    "params_touched": "params touched in the run",
}
"""Display names of the reconcile quantities."""

LEDGER_ROWS: dict[str, str] = {
    "weights": "Σ numel x element size of unique resident parameters (+ quantization state)",
    "buffers": "",
    "kv_cache": "tensors of the cache object",
    "runprof_capture": "runprof's own counters and staging buffers",
    "weights_offloaded": "",
    "torch_allocated": "after load, before the run",
    "other_at_load": "allocated at start − weights − buffers",
    "other_after_run": "tensors alive after the run (outputs, logits)",
    "activations_peak": "peak allocated during the run − allocated at start",
    "allocator_slack": "reserved − allocated",
    "cuda_context_and_other": "NVML used − reserved: CUDA context, library workspaces",
    "nvml_used": "this process, as NVML sees it",
    "nvml_peak": "peak polled during the run",
    "nvml_device_used": "the whole device, every process on it",
    "nvml_device_total": "",
    "process_rss": "resident memory of this process now",
    "process_rss_peak": "peak resident memory of this process",
}
"""What each ledger row is, shown when the row has no cause of its own."""


def _kv(d: Mapping[str, Any]) -> str:
    what = f"MLA: ({d['latent']} latent + {d['rope']} rope)" if d.get("mla") else \
        f"2 x {d['kv_heads']} kv heads x {d['head_dim']} head dim"
    text = f"{what} x {d['element_size']} B x {d['batch']} x ({d['full_layers']} layers x {d['positions']} tokens"
    text += f" + {d['sliding_layers']} sliding-window layers x {d['kept']} tokens)" if d["sliding_layers"] else ")"
    if d.get("other_layers"):
        text += f"; {d['other_layers']} layers keep other state (linear attention, SSM): see the measured kv_cache row"
    return text


def _offloaded(d: Mapping[str, Any]) -> str:
    text = "parameters not in this memory: " + ", ".join(f"{p}: {b} B" for p, b in d["places"].items())
    if d.get("meta"):
        text += " (meta: offloaded by accelerate to CPU or disk, loaded at each forward; see extra['placement'])"
    return text


def _device_unknown(d: Mapping[str, Any]) -> str:
    inner = {k: v for k, v in d.items() if k not in ("device", "cause")}
    return f"{d['device']}: " + (describe(Cause(d["cause"]), inner) if d.get("cause") else "unknown")


_SENTENCES: dict[Cause, Callable[[Mapping[str, Any]], str]] = {
    Cause.NO_TOKENS: lambda d: "no token was tracked",
    Cause.NOT_MEASURED: lambda d: "routing capture was off (track(routing=False)): per-token figures not measured",
    Cause.DENSE: lambda d: "dense model: every token uses every parameter",
    Cause.EQUAL: lambda d: "equal: every token used exactly the router's k experts in every MoE layer",
    Cause.FEWER_EXPERTS_THAN_K: lambda d: "some tokens used fewer distinct experts than the router's k "
                                          "(repeated, skipped or dropped experts)",
    Cause.K_CHANGED: lambda d: f"routers now pick {n(d.get('k_measured'))} experts, the static count assumed "
                               f"k={n(d.get('k_router'))}",
    Cause.DIFFERS: lambda d: "measured differs from static: see experts per token and expert load",
    Cause.CONFIG_K_IGNORED: lambda d: (
        f"MISMATCH: config.num_experts_per_tok={d['k_config']} but the routers hold k={d['k_router']} and measured "
        f"k={d['k_measured']}; routers copy k at init, so a config change after loading does nothing "
        "(use runprof.set_top_k)"),
    Cause.ROUTING_NOT_OBSERVED: lambda d: (
        f"the routing hooks missed {n(d.get('layer_steps'))} layer-steps of {n(d.get('steps'))} steps (a model compiled "
        "before tracking skips hooks added later: set torch._dynamo.config.skip_nnmodule_hook_guards = False before "
        "compiling, or call torch._dynamo.reset(); CUDA-graph replay runs no hook): per-token figures not measured"),
    Cause.ROWS_MISALIGNED: lambda d: f"{n(d.get('layer_steps'))} layer-steps routed other rows than the step computed: "
                                     "per-token figures not measured",
    Cause.RECOMPUTED: lambda d: f"{n(d.get('calls'))} routing calls re-ran inside backward (activation checkpointing): "
                                "the same tokens again, not counted",
    Cause.NOT_GENERATE: lambda d: "no generate() call was seen: prompt and generated tokens are not defined",
    Cause.BEAM_LENGTHS: lambda d: "beam search: generate() chooses the returned lengths, which forward hooks do not "
                                  "see (exact with min_new_tokens = max_new_tokens)",
    Cause.MIXED_EXPANSION: lambda d: "generate() calls with different num_beams / num_return_sequences",
    Cause.MODULES_NOT_RECORDED: lambda d: "unused modules are not recorded under torch.compile (a self-removing hook "
                                          "breaks the graph)",
    Cause.MODEL_MOVED: lambda d: f"parameters moved from {', '.join(d.get('before', ()))} to "
                                 f"{', '.join(d.get('after', ()))} inside the region",
    Cause.LAYER_SUBSET: lambda d: f"{n(d.get('layers'))} of {n(d.get('of'))} MoE layers captured (layers=...): "
                                  "loads for those, no per-token active params",
    Cause.STEPS_TRUNCATED: lambda d: f"per-step records kept for the first {n(d.get('kept'))} of {n(d.get('steps'))} "
                                     "steps (track(max_steps=...)); totals cover every step",
    Cause.ALL_EXPERTS_USED: lambda d: "all experts used at least once",
    Cause.SOME_EXPERTS_UNUSED: lambda d: "some experts were never used in this run",
    Cause.NOT_CUDA: lambda d: "model is on the CPU: no GPU rows",
    Cause.NVML_UNAVAILABLE: lambda d: f"NVML unavailable ({d.get('error', '?')})",
    Cause.NVML_PROCESS_LIST_UNAVAILABLE: lambda d: f"NVML process list unavailable ({d.get('error', '?')})",
    Cause.NVML_PROCESS_HIDDEN: lambda d: f"this process (pid {d.get('pid')}) is not in NVML's process list "
                                         "(container PID namespace?); device-level figures only",
    Cause.NVML_NO_READING: lambda d: "no NVML reading",
    Cause.NOT_POLLED: lambda d: "not polled",
    Cause.NOT_READ: lambda d: "not read",
    Cause.PEAK_BEFORE_RUN: lambda d: f"the run stayed below torch's peak from before it ({n(d.get('peak_before'))} B; "
                                     "track(memory_peak=False) leaves the counter alone)",
    Cause.SNAPSHOT_NOT_POLLED: lambda d: "snapshot: not polled",
    Cause.PROC_UNAVAILABLE: lambda d: "/proc/self/status unavailable",
    Cause.NO_CACHE: lambda d: "no cache object was returned: 0 bytes",
    Cause.NO_CONFIG: lambda d: "no config",
    Cause.KV_ESTIMATE: _kv,
    Cause.KV_CONFIG_HETEROGENEOUS: lambda d: f"config has no single head layout ({d.get('error')}); "
                                             "see the measured kv_cache row",
    Cause.KV_CONFIG_INCOMPLETE: lambda d: f"config lacks {d.get('missing')}",
    Cause.ESTIMATE_IN_TOTAL: lambda d: "the config estimate is for the whole model: see the total",
    Cause.OFFLOADED: _offloaded,
    Cause.ALL_RESIDENT: lambda d: "every parameter is resident",
    Cause.UNKNOWN_INPUT: lambda d: f"{d.get('what')} unknown",
    Cause.DEVICE_UNKNOWN: _device_unknown,
    Cause.SUM_OVER_DEVICES: lambda d: "Σ over " + ", ".join(d.get("devices", ())),
    Cause.PEAK_UNKNOWN: lambda d: "no published peak for this device and dtype (a CPU, or a GPU not in runprof's "
                                  "table): pass track(peak_flops=..., peak_bandwidth=...)",
    Cause.NOT_TIMED: lambda d: "some forward calls were not timed (per-step records truncated): no rates",
}


def describe(cause: Cause | None, detail: Mapping[str, Any] | None = None) -> str:
    """The sentence for ``cause`` with its numbers (``""`` for no cause)."""
    if cause is None:
        return ""
    return _SENTENCES[cause](detail or {})


__all__ = ["LEDGER_ROWS", "QUANTITIES", "describe"]
