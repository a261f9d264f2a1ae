"""What does profiling cost? generate() under runprof and the tools people otherwise reach for.

Runs, in interleaved rounds (A B C ..., then B C ... A, rotated each round) after a warm-up, ``generate(max_new_tokens=64)`` on
(a) runprof's shipped tiny MoE and (b) a Mixtral-shaped random model of about 150M parameters, at batch 1
and 8, under: no profiler; ``runprof.track`` with routing only; ``runprof.track`` with everything on;
``torch.profiler.profile()``; ``torch.utils.flop_counter.FlopCounterMode``; DeepSpeed's ``FlopsProfiler``
(skipped with a note when DeepSpeed is not installed). Each tool's wall time is reported as a ratio to
the un-profiled run of the same round (median, min, max over rounds), and beside it what each tool
*reports* for the model's expert work: FLOP counters see no matmul inside the fused experts under
transformers' default ``grouped_mm`` implementation.

    python benchmarks/overhead.py                 # full run, JSON to benchmarks/results/
    python benchmarks/overhead.py --rounds 3 --quick
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

import runprof
from runprof.models.loading import load_model

RESULTS = Path(__file__).parent / "results"


def mixtral_150m() -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, MixtralConfig

    cfg = MixtralConfig(hidden_size=768, intermediate_size=768, num_hidden_layers=8, num_attention_heads=12,
                        num_key_value_heads=4, num_local_experts=8, num_experts_per_tok=2, vocab_size=8000,
                        max_position_embeddings=512)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval()


def _deepspeed() -> Callable[[torch.nn.Module], Any] | None:
    try:
        from deepspeed.profiling.flops_profiler import FlopsProfiler
    except Exception:  # noqa: BLE001 - not installed, or fails to import without CUDA
        return None

    @contextlib.contextmanager
    def run(model: torch.nn.Module):
        prof = FlopsProfiler(model)
        prof.start_profile()
        try:
            yield prof
        finally:
            prof.stop_profile()
            run.flops = prof.get_total_flops()
            prof.end_profile()

    return run


def tools(model: torch.nn.Module) -> dict[str, Callable[[], Any]]:
    from torch.utils.flop_counter import FlopCounterMode

    out: dict[str, Callable[[], Any]] = {
        "none": contextlib.nullcontext,
        "runprof_routing": lambda: runprof.track(model, modules=False, memory=False),
        "runprof_all": lambda: runprof.track(model),
        "torch_profiler": lambda: torch.profiler.profile(),
        "flop_counter": lambda: FlopCounterMode(display=False),
    }
    ds = _deepspeed()
    if ds is not None:
        out["deepspeed"] = lambda: ds(model)
    return out


def one(model: torch.nn.Module, ids: torch.Tensor, new: int, ctx: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    with torch.inference_mode(), ctx() as handle:
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                       do_sample=False, pad_token_id=0)
    return time.perf_counter() - t0, handle


def reported(name: str, handle: Any, model: torch.nn.Module) -> dict[str, Any]:
    """What the tool says about the run (FLOPs, measured active params)."""
    if name.startswith("runprof"):
        rt = handle.result.runtime
        return {"active_params_per_token": rt.active_params_per_token["all"].mean,
                "experts_per_token": rt.experts_per_token.mean}
    if name == "flop_counter":
        counts = handle.get_flop_counts()
        experts = sum(v for mod, per_op in counts.items() if "experts" in mod for v in per_op.values())
        return {"total_flops": handle.get_total_flops(), "flops_attributed_to_experts": experts}
    if name == "deepspeed":
        return {"total_flops": getattr(_deepspeed(), "flops", None)}
    return {}


def bench(label: str, model: torch.nn.Module, batch: int, rounds: int, new: int, prompt: int) -> dict[str, Any]:
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (batch, prompt), generator=torch.Generator().manual_seed(0))
    ctxs = tools(model)
    for ctx in ctxs.values():  # warm-up, every tool once
        one(model, ids, 4, ctx)
    times: dict[str, list[float]] = {k: [] for k in ctxs}
    reports: dict[str, Any] = {}
    names = list(ctxs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate: no tool always runs first
            ctx = ctxs[name]
            seconds, handle = one(model, ids, new, ctx)
            times[name].append(seconds)
            if r == 0:
                reports[name] = reported(name, handle, model)
        print(f"  {label} b={batch} round {r + 1}/{rounds}: " +
              " ".join(f"{k}={v[-1]:.2f}s" for k, v in times.items()), file=sys.stderr)
    ratios = {k: [t / b for t, b in zip(v, times["none"])] for k, v in times.items()}
    static = runprof.count_params(model)
    return {
        "model": label, "batch_size": batch, "new_tokens": new, "prompt_tokens": prompt,
        "params": static.params.total, "static_active_params_per_token": static.params.active_per_token["all"],
        "seconds_median": {k: statistics.median(v) for k, v in times.items()},
        "ratio_to_none": {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in ratios.items()},
        # noise on a shared machine only ever adds time: the fastest run of each tool is its steadiest figure
        "ratio_of_fastest": {k: min(v) / min(times["none"]) for k, v in times.items()},
        "reported": reports,
        "skipped": {} if "deepspeed" in ctxs else {"deepspeed": "not installed (pip install runprof[bench])"},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--quick", action="store_true", help="the shipped model only")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a 2-core machine)")
    ap.add_argument("--out", default=str(RESULTS / "overhead_cpu.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = {"tiny-moe (shipped)": load_model(None, device="cpu").model}
    if not args.quick:
        models["mixtral-150m (random)"] = mixtral_150m()
    runs = [bench(label, m, b, args.rounds, args.new_tokens, args.prompt_tokens)
            for label, m in models.items() for b in map(int, args.batch_sizes.split(","))]
    data = {"device": "cpu", "machine": f"{platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} threads", "torch": torch.__version__, "rounds": args.rounds, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=2) + "\n")
    print(f"{'model':24s} {'b':>2s} " + " ".join(f"{k:>16s}" for k in runs[0]["ratio_to_none"]))
    for r in runs:
        print(f"{r['model']:24s} {r['batch_size']:>2d} " + " ".join(
            f"{v['median']:>7.3f}x/{r['ratio_of_fastest'][k]:.3f}x" for k, v in r["ratio_to_none"].items()))
    print("(median of paired ratios / ratio of the fastest runs)")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
