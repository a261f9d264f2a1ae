"""Results with their machine-dependent figures pinned (wall time, latency, process memory, env), so that
golden files hold only what the model did."""
from __future__ import annotations

import dataclasses

import torch

import runprof
from runprof.results import TrackResult
from runprof.results.common import Env
from runprof.results.perf import LatencyInfo, Timing

ENV = Env("0.1.0", "2.13.0+cpu", "5.23.0", "cpu", "test CPU", "2026-01-01T00:00:00.000000Z")


def steady_latency(lat: LatencyInfo | None) -> LatencyInfo | None:
    """The same counts, with every duration pinned: 50 ms prefill, 5 ms decode forward, 6 ms decode step; the
    rates are the same tokens over the pinned times."""
    if lat is None:
        return None

    def fixed(t: Timing, s: float) -> Timing:
        return Timing.of([s] * t.count)

    def rate(old: float | None, was: Timing, now: Timing) -> float | None:  # the same tokens over the pinned time
        return None if old is None else round(old * was.total) / now.total

    pre, step = fixed(lat.prefill_forward_s, 0.05), fixed(lat.decode_step_s, 0.006)
    return dataclasses.replace(
        lat, ttft_s=fixed(lat.ttft_s, 0.05), prefill_forward_s=pre,
        decode_forward_s=fixed(lat.decode_forward_s, 0.005), decode_step_s=step,
        train_forward_s=fixed(lat.train_forward_s, 0.01),
        prefill_tokens_per_s=rate(lat.prefill_tokens_per_s, lat.prefill_forward_s, pre),
        decode_tokens_per_s=rate(lat.decode_tokens_per_s, lat.decode_step_s, step))


def steady_utilization(u, lat: LatencyInfo | None, flops):  # noqa: ANN001, ANN201 - UtilizationInfo | None
    """Utilization with its rates recomputed from the pinned latency (the FLOPs and bytes moved are measured)."""
    if u is None or lat is None:
        return u
    pinned = {"prefill": lat.prefill_forward_s.total, "decode": lat.decode_forward_s.total,
              "train": lat.train_forward_s.total}
    forward = {k: None if v is None else pinned[k] for k, v in u.forward_s.items()}
    done = {k: None if flops is None else flops.by_phase.get(k) for k in u.flops_per_s}

    def per_s(values: dict) -> dict:
        return {k: None if values.get(k) is None or not forward.get(k) else values[k] / forward[k] for k in values}

    fps, bps = per_s(done), per_s(u.bytes)
    ratio = (lambda a, b: None if a is None or not b else a / b)  # noqa: E731
    return dataclasses.replace(
        u, forward_s=forward, flops_per_s=fps, bytes_per_s=bps,
        mfu={k: ratio(v, u.peak_flops_per_s) for k, v in fps.items()},
        bandwidth_utilization={k: ratio(v, u.peak_bytes_per_s) for k, v in bps.items()})


def steady_run(r: TrackResult) -> TrackResult:
    """The run with its machine-dependent figures fixed: wall time, latency, process memory, env."""
    memory = r.memory
    if memory is not None:
        rows = tuple(dataclasses.replace(row, bytes=2**30) if row.name.startswith("process_rss") else row
                     for row in memory.rows)
        memory = dataclasses.replace(memory, rows=rows)
    latency = steady_latency(r.runtime.latency)
    runtime = dataclasses.replace(r.runtime, wall_s=0.5, latency=latency,
                                  utilization=steady_utilization(r.runtime.utilization, latency, r.runtime.flops))
    return dataclasses.replace(r, runtime=runtime, memory=memory, env=ENV)


def golden_run(prompt: str = "def f(x):\n    return x", new: int = 4, **track) -> TrackResult:
    """The shipped model's greedy run on ``prompt`` (the golden files' run), pinned by :func:`steady_run`."""
    from runprof.cli.prompts import encode_prompts

    loaded = runprof.load_model()
    ids = encode_prompts(loaded.tokenizer, loaded.model.config, [prompt], new)
    with torch.inference_mode(), runprof.track(loaded.model, name="tiny-moe", **track) as t:
        loaded.model.generate(**ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    return steady_run(t.result)
