"""Overhead of a tracked generate() against the same untracked run, in ABBA blocks with an A/A control.

Each block runs, in this order: untracked (A), tracked (B), tracked (B), untracked (A), then the control: two more
untracked runs timed like the tracked ones (A'). Per block the ratio B/A and A'/A of the block's sums; the medians
over the blocks are quoted, for wall clock and for this process's CPU time (``time.process_time``), beside the
control, which is what this machine's noise alone makes of the same comparison.

    python benchmarks/overhead_abba.py [--blocks 12] [--new 32] [--out benchmarks/results/overhead_abba.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import runprof  # noqa: E402


def mixtral_115m() -> torch.nn.Module:
    """A Mixtral-shaped model of about 115M parameters, random weights."""
    from transformers import AutoModelForCausalLM, MixtralConfig

    cfg = MixtralConfig(hidden_size=512, intermediate_size=768, num_hidden_layers=8, num_attention_heads=8,
                        num_key_value_heads=2, vocab_size=32000, num_local_experts=8, num_experts_per_tok=2)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval()


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--new", type=int, default=32, help="prompt length and new tokens (32 + 32)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "overhead_abba.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = mixtral_115m()
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(3, 30000, (1, args.new), generator=torch.Generator().manual_seed(0))

    def run() -> None:
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new,
                           min_new_tokens=args.new, do_sample=False, pad_token_id=0)

    def tracked() -> None:
        with runprof.track(model):
            run()

    run(), tracked()  # warm-up of both paths
    blocks = []
    for b in range(args.blocks):
        a1, b1, b2, a2 = timed(run), timed(tracked), timed(tracked), timed(run)
        c1, c2 = timed(run), timed(run)
        block = {k: [a1[i] + a2[i], b1[i] + b2[i], c1[i] + c2[i]] for i, k in enumerate(("wall_s", "cpu_s"))}
        blocks.append(block)
        print(f"block {b + 1}: wall B/A {block['wall_s'][1] / block['wall_s'][0]:.3f} A'/A "
              f"{block['wall_s'][2] / block['wall_s'][0]:.3f}; cpu B/A {block['cpu_s'][1] / block['cpu_s'][0]:.3f} "
              f"A'/A {block['cpu_s'][2] / block['cpu_s'][0]:.3f}", flush=True)
    summary = {}
    for clock in ("wall_s", "cpu_s"):
        summary[clock] = {
            "tracked_over_untracked_median": statistics.median(x[clock][1] / x[clock][0] for x in blocks),
            "control_over_untracked_median": statistics.median(x[clock][2] / x[clock][0] for x in blocks),
            "untracked_run_median_s": statistics.median(x[clock][0] / 2 for x in blocks)}
    out = {"model": "Mixtral-shaped, random", "params": params, "prompt": args.new, "new_tokens": args.new,
           "blocks": blocks, "summary": summary, "torch": torch.__version__, "threads": 1}
    Path(args.out).write_text(json.dumps(out, indent=1))
    for clock, s in summary.items():
        print(f"{clock}: tracked/untracked {s['tracked_over_untracked_median']:.4f}, control "
              f"{s['control_over_untracked_median']:.4f}, untracked run {s['untracked_run_median_s']:.3f} s")


if __name__ == "__main__":
    main()
