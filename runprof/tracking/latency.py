"""Per-step latency from the step hook's clocks (read after the region: the one place CUDA events are waited on)."""
from __future__ import annotations

from ..results.perf import LatencyInfo, Timing
from .collectors import StepMeta


def _forward_s(m: StepMeta) -> float | None:
    if m.events is not None:
        m.events[1].synchronize()
        return m.events[0].elapsed_time(m.events[1]) / 1e3
    return None if m.t1 is None else m.t1 - m.t0


def latency(meta: list[StepMeta], tokens: dict[str, int]) -> LatencyInfo | None:
    """Time to first token, forward and step times per phase, tokens per second (None: no step was timed)."""
    timed = [(m, _forward_s(m)) for m in meta]
    timed = [(m, s) for m, s in timed if s is not None]
    if not timed:
        return None
    by_phase: dict[str, list[float]] = {"prefill": [], "decode": [], "train": []}
    steps: list[float] = []
    for i, (m, s) in enumerate(timed):
        by_phase[m.phase].append(s)
        if m.phase != "decode":
            continue
        nxt = timed[i + 1][0] if i + 1 < len(timed) else None
        same = nxt is not None and nxt.phase == "decode" and nxt.generation == m.generation
        steps.append(nxt.t0 - m.t0 if same else s)  # the last step of a generation: its forward
    ttft = [s for m, s in timed if m.phase == "prefill"]
    all_timed = len(timed) == len(meta)
    pre, dec = Timing.of(by_phase["prefill"]), Timing.of(steps)

    def rate(n: int, t: Timing) -> float | None:
        return n / t.total if all_timed and t.total > 0 and t.count else None

    return LatencyInfo(
        clock="cuda_events" if timed[0][0].events is not None else "perf_counter", steps_timed=len(timed),
        ttft_s=Timing.of(ttft), prefill_forward_s=pre, decode_forward_s=Timing.of(by_phase["decode"]),
        decode_step_s=dec, train_forward_s=Timing.of(by_phase["train"]),
        prefill_tokens_per_s=rate(tokens.get("prefill", 0), pre), decode_tokens_per_s=rate(tokens.get("decode", 0), dec))
