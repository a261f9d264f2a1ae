"""What does profiling cost? generate() under runprof and the tools people otherwise reach for.

Runs ``generate(max_new_tokens=64)`` on (a) runprof's shipped tiny MoE and (b) a Mixtral-shaped random
model of about 150M parameters (on ``--device cuda``: a real-shaped Mixtral-8x7B stack of 2 layers in bf16
instead), at batch 1 and 8, under: no profiler; ``runprof.track`` with routing only; ``runprof.track`` with
everything on; ``torch.profiler.profile()``; ``torch.utils.flop_counter.FlopCounterMode``; DeepSpeed's
``FlopsProfiler`` (skipped with a note when DeepSpeed is not installed).

Timing, after a warm-up of every tool: each round runs every tool once in rotated order, then ``--pairs``
more rotated triples of (no profiler, runprof routing, runprof everything): runprof's cost is a few percent
at most, below this shared machine's run-to-run noise, so it gets more samples than the slow tools. Every
timed run is divided by the un-profiled run of its own round or triple; reported per tool are the median of
those paired ratios with a distribution-free 95% confidence interval of the median, min and max, the ratio
of the fastest runs, and the median time spent entering and leaving the tool's context (runprof's start and
stop). Beside the timings stands what each tool *reports* for the model's expert work: FLOP counters see no
matmul inside the fused experts under transformers' default ``grouped_mm`` implementation.

    python benchmarks/overhead.py                 # full run, JSON to benchmarks/results/overhead_cpu.json
    python benchmarks/overhead.py --rounds 3 --quick
    python benchmarks/overhead.py --device cuda   # on a GPU: also checks the tracked region is sync-free
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import runprof
from runprof.models.loading import load_model

RESULTS = Path(__file__).parent / "results"
RUNPROF = ("none", "runprof_routing", "runprof_all")


def mixtral_150m(device: str = "cpu") -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, MixtralConfig

    cfg = MixtralConfig(hidden_size=768, intermediate_size=768, num_hidden_layers=8, num_attention_heads=12,
                        num_key_value_heads=4, num_local_experts=8, num_experts_per_tok=2, vocab_size=8000,
                        max_position_embeddings=512)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval().to(device)


def _deepspeed() -> Callable[[torch.nn.Module], Any] | None:
    try:
        from deepspeed.profiling.flops_profiler import FlopsProfiler
    except Exception:  # noqa: BLE001 - not installed, or fails to import here
        return None

    class Report:
        flops: int | None = None
        expert_flops: int | None = None

    @contextlib.contextmanager
    def run(model: torch.nn.Module):
        prof, report = FlopsProfiler(model), Report()
        prof.start_profile()
        try:
            yield report
        finally:
            prof.stop_profile()
            report.flops = int(prof.get_total_flops())
            report.expert_flops = int(sum(getattr(m, "__flops__", 0) for n, m in model.named_modules()
                                          if n.endswith(".experts")))
            prof.end_profile()

    return run


def tools(model: torch.nn.Module) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """The tools to time, and the ones skipped with the reason."""
    from torch.utils.flop_counter import FlopCounterMode

    out: dict[str, Callable[[], Any]] = {
        "none": contextlib.nullcontext,
        "runprof_routing": lambda: runprof.track(model, modules=False, memory=False),
        "runprof_all": lambda: runprof.track(model),
        "torch_profiler": lambda: torch.profiler.profile(),
        "flop_counter": lambda: FlopCounterMode(display=False),
    }
    skipped = {}
    ds = _deepspeed()
    if ds is None:
        skipped["deepspeed"] = ("not installed: DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed "
                                "(after torch, so the CPU build stays)")
    else:
        out["deepspeed"] = lambda: ds(model)
    return out, skipped


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one(model: torch.nn.Module, ids: torch.Tensor, new: int, ctx: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds of one profiled generate(), the seconds spent entering and leaving the tool, its handle."""
    _sync(ids.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        cm = ctx()
        handle = cm.__enter__()
        t1 = time.perf_counter()
        try:
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                           do_sample=False, pad_token_id=0)
            _sync(ids.device)
        except BaseException:
            cm.__exit__(*sys.exc_info())
            raise
        t2 = time.perf_counter()
        cm.__exit__(None, None, None)
    t3 = time.perf_counter()
    return t3 - t0, (t1 - t0) + (t3 - t2), handle


def reported(name: str, handle: Any) -> dict[str, Any]:
    """What the tool says about the run (FLOPs, measured active params)."""
    if name.startswith("runprof"):
        rt = handle.result.runtime
        return {"active_params_per_token": rt.active_params_per_token["all"].mean,
                "experts_per_token": rt.experts_per_token.mean}
    if name == "flop_counter":
        counts = handle.get_flop_counts()
        experts = sum(v for mod, per_op in counts.items() if mod.endswith(".experts") for v in per_op.values())
        return {"total_flops": handle.get_total_flops(), "flops_attributed_to_experts": experts}
    if name == "deepspeed":
        return {"total_flops": handle.flops, "flops_attributed_to_experts": handle.expert_flops}
    return {}


def median_ci(values: list[float]) -> tuple[float, float]:
    """Distribution-free 95% confidence interval of the median (binomial order statistics)."""
    v, n = sorted(values), len(values)
    half = 0.98 * math.sqrt(n)  # 1.96 * sqrt(n) / 2
    lo, hi = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half) - 1)
    return v[lo], v[hi]


def summary(ratios: list[float]) -> dict[str, Any]:
    lo, hi = median_ci(ratios)
    return {"median": statistics.median(ratios), "ci95": [lo, hi], "min": min(ratios), "max": max(ratios),
            "n": len(ratios)}


def sync_free(model: torch.nn.Module, ids: torch.Tensor) -> bool | None:
    """On CUDA: a prefill and a decode step under ``track`` with ``set_sync_debug_mode("error")``."""
    if ids.device.type != "cuda":
        return None
    with torch.inference_mode():
        out = model(ids, use_cache=True)  # warm-up outside the checked region
        with runprof.track(model):
            torch.cuda.set_sync_debug_mode("error")
            try:
                out = model(ids, use_cache=True)
                model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
            except RuntimeError as e:
                print(f"  host sync inside the tracked region: {e}", file=sys.stderr)
                return False
            finally:
                torch.cuda.set_sync_debug_mode(0)
    return True


def bench(label: str, model: torch.nn.Module, batch: int, rounds: int, pairs: int, new: int,
          prompt: int) -> dict[str, Any]:
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (batch, prompt), generator=torch.Generator().manual_seed(0)).to(device)
    ctxs, skipped = tools(model)
    for ctx in ctxs.values():  # warm-up, every tool once
        one(model, ids, 4, ctx)
    times: dict[str, list[float]] = {k: [] for k in ctxs}
    edges: dict[str, list[float]] = {k: [] for k in ctxs}
    ratios: dict[str, list[float]] = {k: [] for k in ctxs}
    reports: dict[str, Any] = {}
    names = list(ctxs)

    def block(order: list[str]) -> None:
        got = {}
        for name in order:
            seconds, edge, handle = one(model, ids, new, ctxs[name])
            got[name] = seconds
            times[name].append(seconds)
            edges[name].append(edge)
            if name not in reports:
                reports[name] = reported(name, handle)
        for name, seconds in got.items():
            ratios[name].append(seconds / got["none"])

    for r in range(rounds):
        block(names[r % len(names):] + names[: r % len(names)])  # rotate: no tool always runs first
        for p in range(pairs):
            block(list(RUNPROF[p % 3:] + RUNPROF[: p % 3]))
        print(f"  {label} b={batch} round {r + 1}/{rounds}: " + " ".join(
            f"{k}={statistics.median(v):.3f}x" for k, v in ratios.items() if k != "none"), file=sys.stderr)
    static = runprof.count_params(model)
    return {
        "model": label, "batch_size": batch, "new_tokens": new, "prompt_tokens": prompt,
        "params": static.params.total, "static_active_params_per_token": static.params.active_per_token["all"],
        "seconds_median": {k: statistics.median(v) for k, v in times.items()},
        "ratio_to_none": {k: summary(v) for k, v in ratios.items()},
        # noise on a shared machine only ever adds time: the fastest run of each tool is its steadiest figure
        "ratio_of_fastest": {k: min(v) / min(times["none"]) for k, v in times.items()},
        "enter_exit_ms_median": {k: 1e3 * statistics.median(v) for k, v in edges.items()},
        "reported": reports,
        "sync_free_tracked_region": sync_free(model, ids),
        "skipped": skipped,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds of every tool")
    ap.add_argument("--pairs", type=int, default=6,
                    help="extra (none, runprof routing, runprof everything) triples per round")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--quick", action="store_true", help="the shipped model only")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a 2-core machine)")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/overhead_<device>.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA GPU here", file=sys.stderr)
        return 2
    models = {"tiny-moe (shipped)": lambda: load_model(None, device=args.device).model}
    if not args.quick and args.device == "cpu":
        models["mixtral-150m (random)"] = mixtral_150m
    elif not args.quick:
        models["mixtral-8x7b 2 layers bf16 (random)"] = lambda: load_model(
            "mixtral", device="cuda", dtype=torch.bfloat16, random_init=True, num_layers=2).model
    runs = []
    for label, make in models.items():
        model = make()
        runs += [bench(label, model, b, args.rounds, args.pairs, args.new_tokens, args.prompt_tokens)
                 for b in map(int, args.batch_sizes.split(","))]
        del model
    if args.device == "cuda":
        machine = torch.cuda.get_device_name(0)
    else:
        machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    data = {"device": args.device, "machine": machine, "torch": torch.__version__, "rounds": args.rounds,
            "pairs_per_round": args.pairs, "runs": runs}
    out = Path(args.out or RESULTS / f"overhead_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    tools_ = list(runs[0]["ratio_to_none"])
    print(f"{'model':36s} {'b':>2s} " + " ".join(f"{k:>28s}" for k in tools_ if k != "none"))
    for r in runs:
        cells = []
        for k in tools_[1:]:
            v = r["ratio_to_none"][k]
            cells.append(f"{v['median']:.3f}x [{v['ci95'][0]:.3f},{v['ci95'][1]:.3f}] n={v['n']}")
        print(f"{r['model']:36s} {r['batch_size']:>2d} " + " ".join(f"{c:>28s}" for c in cells))
    print("(median of paired ratios to no profiler [95% CI of the median], n pairs)")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
