"""Cost of runprof's capture against the work: device and process memory, start, per-step and stop cost.

runprof's hooks are driven directly (the step hook with decode-shaped inputs, every MoE layer's routing hook with
k expert ids per row), on real MoE layers of tiny-hidden models of the shapes asked for, so the model's own compute
does not drown runprof's: 4 layers x 8 experts (k 2), 48 x 128 (k 8, Qwen3-30B-A3B's shape) and 60 x 256 (k 8,
DeepSeek-V3's expert count), decoding 1k, 10k and 100k tokens at batch 1 and 32, in the default mode (counters) and
in trace mode. Writes ``benchmarks/results/capture_cost.json`` after each case; prints one line per case.

    python benchmarks/capture_cost.py [--quick] [--out benchmarks/results/capture_cost.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import runprof  # noqa: E402

SHAPES = [(4, 8, 2), (48, 128, 8), (60, 256, 8)]


def model_of(layers: int, experts: int, k: int) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, Qwen3MoeConfig

    cfg = Qwen3MoeConfig(hidden_size=16, intermediate_size=16, moe_intermediate_size=4, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, vocab_size=64,
                         num_experts=experts, num_experts_per_tok=k, max_position_embeddings=256)
    return AutoModelForCausalLM.from_config(cfg).eval()


def _steps(t, model, steps: int, batch: int, e: int, k: int, probe) -> None:
    g = torch.Generator().manual_seed(0)
    cache = object()
    ids = torch.randint(0, 60, (batch, 1), generator=g)
    choices = [torch.randperm(e, generator=g)[:k].repeat(batch, 1) for _ in range(8)]
    hidden = torch.zeros(batch, 16)
    routers = t._routers
    for s in range(steps):
        t._steps(model, (ids,), {"past_key_values": cache, "attention_mask": None})
        for i, rc in enumerate(routers):
            rc.pre_hook(rc.layer.experts, (hidden, choices[(s + i) % 8], None), {})
        if s == max(1, steps // 100):
            probe()


def drive(model: torch.nn.Module, tokens: int, batch: int, *, trace: bool) -> dict:
    """Decode ``tokens`` tokens in steps of ``batch`` rows through runprof's hooks; measure runprof only: one
    pass timed, one pass under tracemalloc for runprof's Python memory (tracemalloc slows Python down)."""
    steps = max(1, tokens // batch)
    out: dict = {"tokens": steps * batch, "batch": batch, "steps": steps, "trace": trace}
    for timing in (False, True):  # the timed pass last: its tracker's capture is measured after stop()
        t = runprof.track(model, memory=False, modules=False, trace=trace)
        t0 = time.perf_counter()
        t.start()
        start_s = time.perf_counter() - t0
        e, k = t._routers[0].layer.num_experts, max(r.layer.top_k for r in t._routers)
        early: dict = {}
        if not timing:
            tracemalloc.start()

        def probe() -> None:
            early["device"] = sum(t._cap.nbytes().values())
            if not timing:
                early["snap"] = tracemalloc.take_snapshot()

        w0, c0 = time.perf_counter(), time.process_time()
        _steps(t, model, steps, batch, e, k, probe)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        device = sum(t._cap.nbytes().values())
        if not timing:
            snap = tracemalloc.take_snapshot()
            tracemalloc.stop()
            out["python_bytes_grown"] = sum(d.size_diff for d in snap.compare_to(early.get("snap", snap), "filename")
                                            if "runprof" in str(d.traceback))
            t.stop()
            continue
        t1 = time.perf_counter()
        r = t.stop()
        stop_s = time.perf_counter() - t1
        assert r.runtime.tokens["prefill"] + r.runtime.tokens["decode"] == steps * batch
        assert all(sum(load) == steps * batch * k for load in r.runtime.expert_load)
        n_layers = len(t._routers)
        tr = t._cap.trace
        if trace:  # what the trace holds per token and layer: used rows, and the rows allocated (doubling)
            per_row = sum(ids.shape[0] * ids.shape[2] * ids.element_size() for ids in tr.ids) + (
                tr.real.element_size() + tr.step.element_size() + tr.position.element_size())
            out.update(trace_id_bytes=tr.ids[0].element_size(), trace_rows_used=tr.used,
                       trace_rows_allocated=tr.real.numel(), trace_used_bytes_per_token_layer=per_row / n_layers,
                       trace_allocated_bytes_per_token_layer=per_row * tr.real.numel() / (tr.used * n_layers))
        out.update(start_s=start_s, per_step_s=wall / steps, per_step_cpu_s=cpu / steps, stop_s=stop_s,
                   device_bytes_early=early.get("device", device), device_bytes_end=device,
                   trace_bytes_per_token_layer=(device - early.get("device", device)) / (
                       max(1, steps - max(1, steps // 100)) * batch * n_layers) if trace else None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1k and 10k tokens only")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "capture_cost.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = []
    for layers, experts, k in SHAPES:
        model = model_of(layers, experts, k)
        cold = runprof.track(model, memory=False, modules=False)
        t0 = time.perf_counter()
        cold.start()
        t1 = time.perf_counter()
        cold.stop()
        cold_s = {"first_start_s": t1 - t0, "first_stop_s": time.perf_counter() - t1}  # discovery, static counts
        print(f"{layers}x{experts} k{k} first track of the model: start {cold_s['first_start_s'] * 1e3:.1f} ms, "
              f"stop {cold_s['first_stop_s'] * 1e3:.1f} ms", flush=True)
        for tokens in ((1_000, 10_000) if args.quick else (1_000, 10_000, 100_000)):
            for batch in (1, 32):
                for trace in (False, True) if (layers, experts) == (48, 128) else (False,):
                    row = {"layers": layers, "experts": experts, "k": k, **cold_s,
                           **drive(model, tokens, batch, trace=trace)}
                    cases.append(row)
                    print(f"{layers}x{experts} k{k} {row['tokens']:>7} tok b{batch:<2} {'trace' if trace else 'count'}:"
                          f" start {row['start_s'] * 1e3:6.1f} ms, {row['per_step_s'] * 1e6:7.1f} us/step "
                          f"(cpu {row['per_step_cpu_s'] * 1e6:7.1f}), stop {row['stop_s'] * 1e3:7.1f} ms, device "
                          f"{row['device_bytes_early'] / 2**20:6.2f} -> {row['device_bytes_end'] / 2**20:6.2f} MiB, "
                          f"python +{row['python_bytes_grown'] / 2**20:.2f} MiB"
                          + (f", trace {row['trace_used_bytes_per_token_layer']:.2f} B per token-layer used, "
                             f"{row['trace_allocated_bytes_per_token_layer']:.2f} allocated" if trace else ""),
                          flush=True)
                    Path(args.out).write_text(json.dumps({"torch": torch.__version__, "cases": cases}, indent=1))


if __name__ == "__main__":
    main()
