"""Where does runprof's own time go? cProfile of generate() under track on the shipped tiny MoE.

Prints the runprof functions by cumulative time, the per-call cost of each hook, and the share of the run
spent inside runprof (hooks, start, stop); then, without cProfile (whose own overhead is larger than what is
measured), what per-step latency costs per forward call (the step post-hook, the clock read and the extra step
record fields) and what FLOPs and utilization cost at stop(); writes JSON to
benchmarks/results/profile_tracker.json.

    python benchmarks/profile_tracker.py [--latency-only]
"""
from __future__ import annotations

import cProfile
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's runprof, not an installed one
import runprof  # noqa: E402
from runprof.models.loading import load_model  # noqa: E402

OUT = Path(__file__).parent / "results" / "profile_tracker.json"


def _us_per_call(fn, n: int = 20_000, rounds: int = 7) -> float:
    """Median over ``rounds`` of the mean µs of one ``fn()`` call, timed over ``n`` calls."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


def latency_cost(model: torch.nn.Module) -> dict:
    """µs per forward call that per-step latency adds to the step hook, measured on the hook bodies themselves:
    the forward post-hook (it exists for latency only), one ``perf_counter()`` read in the pre-hook, and the step
    record's timing fields; the whole pre-hook for scale. On a GPU the post-hook also records a CUDA event (no
    sync: events are read at stop)."""
    from runprof.tracking.collectors import StepMeta

    ids = torch.ones(8, 1, dtype=torch.long)
    kwargs = {"input_ids": ids, "attention_mask": torch.ones(8, 20, dtype=torch.long), "past_key_values": object()}
    with runprof.track(model, memory=False, modules=False) as t:
        steps = t._steps
        steps(model, (), kwargs)
        last = steps.meta[-1]

        def post() -> None:
            last.t1 = None
            steps.after(model, (), kwargs, None)

        after = _us_per_call(post)
        reset = _us_per_call(lambda: setattr(last, "t1", None))
    clock = _us_per_call(time.perf_counter)
    full = _us_per_call(lambda: StepMeta("decode", 8, 1, 0, 0.0, 20, 8, None, None))
    bare = _us_per_call(lambda: StepMeta("decode", 8, 1, 0, 0.0))
    added = max(after - reset, 0.0) + clock + max(full - bare, 0.0)
    return {"post_hook_us": max(after - reset, 0.0), "clock_read_us": clock,
            "step_record_timing_fields_us": max(full - bare, 0.0), "latency_us_per_forward": added,
            "budget_us": 10.0, "within_budget": added < 10.0, "device": "cpu", "calls_per_round": 20_000}


def stop_cost(model: torch.nn.Module, ids: torch.Tensor) -> dict:
    """ms that FLOPs and utilization add to stop() for one generate (computed from the step records; no hook)."""
    from runprof.flops import count_flops, utilization
    from runprof.tracking.summary import read

    with torch.inference_mode(), runprof.track(model, memory=False) as t:
        model.generate(ids, max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=0)
    c = read(t._cap, t._steps)
    mf, rt, meta = t._facts.flops, t.result.runtime, t._steps.meta

    def both() -> None:
        f = count_flops(mf, meta, n_steps=t._cap.n_steps, rows=dict(t._steps.rows), load_all=c.load_all,
                        kseen=c.kseen, unused=None)
        utilization(mf, f, meta, rt.steps, rt.latency, device=torch.device("cpu"), dtype="bfloat16",
                    n_steps=t._cap.n_steps)

    return {"steps": len(meta), "flops_and_utilization_ms_at_stop": _us_per_call(both, n=20, rounds=5) / 1e3}


def main() -> int:
    torch.set_num_threads(1)
    loaded = load_model(None, device="cpu")
    model, tok = loaded.model, loaded.tokenizer
    ids = tok(["def fibonacci(n):"] * 8, return_tensors="pt")["input_ids"]
    latency = latency_cost(model)
    print(f"per-step latency costs {latency['latency_us_per_forward']:.2f} us per forward on the CPU (post-hook "
          f"{latency['post_hook_us']:.2f}, clock {latency['clock_read_us']:.2f}, record fields "
          f"{latency['step_record_timing_fields_us']:.2f})")
    at_stop = stop_cost(model, ids)
    print(f"FLOPs + utilization at stop(): {at_stop['flops_and_utilization_ms_at_stop']:.2f} ms for "
          f"{at_stop['steps']} steps")
    if "--latency-only" in sys.argv:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(OUT.read_text()) if OUT.exists() else {}
        OUT.write_text(json.dumps({**old, "latency_cost": latency, "stop_cost": at_stop}, indent=2) + "\n")
        return 0

    def run() -> None:
        with torch.inference_mode(), runprof.track(model):
            model.generate(ids, max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=0)

    run()  # warm-up
    prof = cProfile.Profile()
    prof.enable()
    run()
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt
    rows = []
    for (path, line, func), (cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "/runprof/" in path:
            rows.append({"function": f"{Path(path).parent.name}/{Path(path).name}:{line} {func}", "calls": nc,
                         "tottime_s": tt, "cumtime_s": ct, "per_call_us": 1e6 * ct / max(nc, 1)})
    rows.sort(key=lambda r: -r["cumtime_s"])
    top = {r["function"].split(" ")[-1]: r for r in rows}
    inside = sum(top[name]["cumtime_s"] for name in ("start", "stop") if name in top)
    hooks = [r for r in rows if r["function"].endswith((" __call__", " pre_hook", " post_hook", " hook", " _keep_cache"))]
    inside += sum(r["cumtime_s"] for r in hooks)
    data = {"model": "tiny-moe (shipped)", "batch_size": 8, "new_tokens": 64, "profiled_total_s": total,
            "runprof_s": inside, "runprof_share": inside / total, "functions": rows[:25],
            "latency_cost": latency, "stop_cost": at_stop}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=2) + "\n")
    print(f"profiled run: {total:.3f} s; inside runprof (start + hooks + stop): {inside:.4f} s "
          f"({100 * inside / total:.2f}%)")
    for r in rows[:15]:
        print(f"{r['cumtime_s']:8.4f} s {r['calls']:6d} calls {r['per_call_us']:9.1f} us/call  {r['function']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
