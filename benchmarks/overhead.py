"""What does profiling cost? generate() under runprof and the tools people otherwise reach for.

Runs ``generate(max_new_tokens=64)`` on (a) runprof's shipped tiny MoE and (b) a Mixtral-shaped random
model of about 150M parameters (on ``--device cuda``: a real-shaped Mixtral-8x7B stack of 2 layers in bf16
instead), at batch 1 and 8, under: no profiler; ``runprof.track`` with routing only; ``runprof.track`` with
everything on; ``torch.profiler.profile()``; ``torch.utils.flop_counter.FlopCounterMode``; DeepSpeed's
``FlopsProfiler`` (skipped with a note when DeepSpeed is not installed).

Each tool runs in a process of its own (runprof's three arms share one): DeepSpeed's profiler swaps torch
functions and the torch profilers install global observers, and runs after them in the same process were
measured several percent slower. Only one process runs at a time.

Timing, after a warm-up of every tool: each round runs every tool once in rotated order, then ``--pairs``
more rotated quadruples of (no profiler, no profiler again, runprof routing, runprof everything): runprof's
cost is a few percent at most, below this shared machine's run-to-run noise, so it gets more samples than the
slow tools, and the second un-profiled arm (an A/A control) shows what noise alone makes of the same count. Every
timed run is divided by the un-profiled run of its own round or quadruple; reported per tool are the median of
those paired ratios with a distribution-free 95% confidence interval of the median, min and max, the ratio
of the fastest runs, and the median time spent entering and leaving the tool's context (runprof's start and
stop). Beside the timings stands what each tool *reports* for the model's expert work: FLOP counters see no
matmul inside the fused experts under transformers' default ``grouped_mm`` implementation.

    python benchmarks/overhead.py                 # full run, JSON to benchmarks/results/overhead_cpu.json
    python benchmarks/overhead.py --rounds 3 --quick
    python benchmarks/overhead.py --device cuda   # on a GPU: also checks the tracked region is sync-free

Runs from a bare copy of the repository (``gpu_common`` puts the repository root on ``sys.path``; nothing needs
installing beyond torch and transformers). The JSON is rewritten after every (model, batch) cell, so a run
cut short keeps what it measured; the exit code is 1 when a sync check fails.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from gpu_common import environment, write_json

import runprof
from runprof.models.loading import load_model

RESULTS = Path(__file__).parent / "results"
# "none_again" is an A/A control: a second un-profiled arm, timed like a tool. Its ratio to "none" is this
# machine's noise floor for the same number of pairs, printed beside runprof's.
RUNPROF = ("none", "none_again", "runprof_routing", "runprof_all")


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
        "none_again": contextlib.nullcontext,
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


def _region(model: torch.nn.Module, ids: torch.Tensor) -> None:
    out = model(ids, use_cache=True)
    model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)


def _under_sync_error(model: torch.nn.Module, ids: torch.Tensor) -> str | None:
    """A prefill and a decode step with ``set_sync_debug_mode("error")``: None, or the sync's first line."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        _region(model, ids)
    except RuntimeError as e:
        return str(e).splitlines()[0][:300]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return None


def sync_free(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, Any] | None:
    """On CUDA: is a prefill and a decode step under ``track`` free of host syncs? The same region untracked
    runs first as the control: when transformers' own forward syncs, the tracked region cannot be judged
    (``sync_free`` None, with the reason); else ``sync_free`` says whether runprof added a sync."""
    if ids.device.type != "cuda":
        return None
    with torch.inference_mode():
        _region(model, ids)  # warm-up outside the checked region
        control = _under_sync_error(model, ids)
        if control is not None:
            return {"sync_free": None, "reason": f"the untracked forward syncs already: {control}"}
        with runprof.track(model):
            tracked = _under_sync_error(model, ids)
    if tracked is not None:
        print(f"  host sync inside the tracked region: {tracked}", file=sys.stderr)
    return {"sync_free": tracked is None, "reason": tracked}


MODELS = {
    "cpu": {"tiny-moe (shipped)": "tiny", "mixtral-150m (random)": "150m"},
    "cuda": {"tiny-moe (shipped)": "tiny", "mixtral-8x7b 2 layers bf16 (random)": "mixtral-2l"},
}


def make_model(key: str, device: str) -> torch.nn.Module:
    if key == "tiny":
        return load_model(None, device=device).model
    if key == "150m":
        return mixtral_150m(device)
    return load_model("mixtral", device=device, dtype=torch.bfloat16, random_init=True, num_layers=2).model


def _worker(conn: Any, key: str, device: str, threads: int) -> None:
    """One process per tool group: builds the model (same seed, same weights), then times what it is told to.

    The tools patch global state (DeepSpeed's profiler swaps torch functions, torch.profiler and the FLOP
    counter install global observers): each runs in its own process so none can slow another's runs.
    """
    torch.set_num_threads(threads)
    model = make_model(key, device)
    ctxs, skipped = tools(model)
    static = runprof.count_params(model)
    conn.send((list(ctxs), skipped, static.params.total, static.params.active_per_token["all"]))
    ids_for: dict[tuple[int, int], torch.Tensor] = {}
    while (msg := conn.recv()) is not None:
        op, name, batch, prompt, new, report = msg
        key_ = (batch, prompt)
        if key_ not in ids_for:
            ids_for[key_] = torch.randint(3, model.config.vocab_size, key_,
                                          generator=torch.Generator().manual_seed(0)).to(device)
        ids = ids_for[key_]
        if op == "sync_free":
            conn.send(sync_free(model, ids))
            continue
        seconds, edge, handle = one(model, ids, new, ctxs[name])
        conn.send((seconds, edge, reported(name, handle) if report else None))


class Workers:
    """The tool groups' processes: runprof's three arms share one (runprof leaves nothing behind), every
    other tool has its own. Only one process runs at a time; the others wait on their pipe."""

    def __init__(self, key: str, device: str, threads: int) -> None:
        ctx = mp.get_context("spawn")
        self.procs: dict[str, Any] = {}
        self.conns: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}
        self.owner: dict[str, str] = {}
        for group in ("runprof", "torch_profiler", "flop_counter", "deepspeed"):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(theirs, key, device, threads), daemon=True)
            proc.start()
            self.procs[group], self.conns[group] = proc, mine
        for group, conn in self.conns.items():
            names, skipped, self.params, self.active = conn.recv()
            self.skipped.update(skipped)
            wanted = RUNPROF if group == "runprof" else (group,)
            self.owner.update({n: group for n in names if n in wanted})
        self.names = [n for n in (*RUNPROF, "torch_profiler", "flop_counter", "deepspeed") if n in self.owner]

    def run(self, name: str, batch: int, prompt: int, new: int, report: bool = False) -> tuple[float, float, Any]:
        conn = self.conns[self.owner[name]]
        conn.send(("run", name, batch, prompt, new, report))
        return conn.recv()

    def sync_free(self, batch: int, prompt: int) -> dict[str, Any] | None:
        conn = self.conns["runprof"]
        conn.send(("sync_free", "", batch, prompt, 0, False))
        return conn.recv()

    def close(self) -> None:
        for conn in self.conns.values():
            conn.send(None)
        for proc in self.procs.values():
            proc.join(timeout=30)


def bench(label: str, workers: Workers, batch: int, rounds: int, pairs: int, new: int,
          prompt: int) -> dict[str, Any]:
    names = workers.names
    for name in names:  # warm-up, every tool once
        workers.run(name, batch, prompt, 4)
    times: dict[str, list[float]] = {k: [] for k in names}
    edges: dict[str, list[float]] = {k: [] for k in names}
    ratios: dict[str, list[float]] = {k: [] for k in names}
    reports: dict[str, Any] = {}

    def block(order: list[str]) -> None:
        got = {}
        for name in order:
            seconds, edge, report = workers.run(name, batch, prompt, new, report=name not in reports)
            got[name] = seconds
            times[name].append(seconds)
            edges[name].append(edge)
            if report is not None:
                reports[name] = report
        for name, seconds in got.items():
            ratios[name].append(seconds / got["none"])

    for r in range(rounds):
        block(names[r % len(names):] + names[: r % len(names)])  # rotate: no tool always runs first
        for p in range(pairs):
            block(list(RUNPROF[p % len(RUNPROF):] + RUNPROF[: p % len(RUNPROF)]))
        print(f"  {label} b={batch} round {r + 1}/{rounds}: " + " ".join(
            f"{k}={statistics.median(v):.3f}x" for k, v in ratios.items() if k != "none"), file=sys.stderr)
    return {
        "model": label, "batch_size": batch, "new_tokens": new, "prompt_tokens": prompt,
        "params": workers.params, "static_active_params_per_token": workers.active,
        "seconds_median": {k: statistics.median(v) for k, v in times.items()},
        "ratio_to_none": {k: summary(v) for k, v in ratios.items()},
        # noise on a shared machine only ever adds time: the fastest run of each tool is its steadiest figure
        "ratio_of_fastest": {k: min(v) / min(times["none"]) for k, v in times.items()},
        "enter_exit_ms_median": {k: 1e3 * statistics.median(v) for k, v in edges.items()},
        "reported": reports,
        "sync_free_tracked_region": workers.sync_free(batch, prompt),
        "skipped": workers.skipped,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds of every tool")
    ap.add_argument("--pairs", type=int, default=6,
                    help="extra (none, none again, runprof routing, runprof everything) quadruples per round")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--quick", action="store_true", help="the shipped model only")
    ap.add_argument("--models", help="comma-separated model keys to run (cpu: tiny,150m; cuda: tiny,mixtral-2l)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a 2-core machine)")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/overhead_<device>.json)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA GPU here", file=sys.stderr)
        return 2
    models = dict(list(MODELS[args.device].items())[:1] if args.quick else MODELS[args.device])
    if args.models:
        wanted = args.models.split(",")
        unknown = set(wanted) - set(MODELS[args.device].values())
        if unknown:
            print(f"--models: unknown {sorted(unknown)}; {args.device} has {list(MODELS[args.device].values())}",
                  file=sys.stderr)
            return 2
        models = {label: key for label, key in MODELS[args.device].items() if key in wanted}
    if args.device == "cuda":
        machine = torch.cuda.get_device_name(0)
    else:
        machine = f"{platform.machine()}, {args.threads} torch thread(s), {os.cpu_count()} cores"
    runs: list[dict[str, Any]] = []
    data = {"device": args.device, "machine": machine, "torch": torch.__version__, "environment": environment(),
            "rounds": args.rounds, "pairs_per_round": args.pairs, "new_tokens": args.new_tokens,
            "isolation": "one process per tool (runprof's arms share one)", "runs": runs}
    out = Path(args.out or RESULTS / f"overhead_{args.device}.json")
    for label, key in models.items():
        workers = Workers(key, args.device, args.threads)
        try:
            for b in map(int, args.batch_sizes.split(",")):
                runs.append(bench(label, workers, b, args.rounds, args.pairs, args.new_tokens, args.prompt_tokens))
                write_json(out, data)  # as soon as each cell exists: a run cut short keeps what it measured
        finally:
            workers.close()
    tools_ = list(runs[0]["ratio_to_none"])
    print(f"{'model':36s} {'b':>2s} " + " ".join(f"{k:>28s}" for k in tools_ if k != "none"))
    for r in runs:
        cells = []
        for k in tools_[1:]:
            v = r["ratio_to_none"][k]
            cells.append(f"{v['median']:.3f}x [{v['ci95'][0]:.3f},{v['ci95'][1]:.3f}] n={v['n']}")
        print(f"{r['model']:36s} {r['batch_size']:>2d} " + " ".join(f"{c:>28s}" for c in cells))
    print("(median of paired ratios to no profiler [95% CI of the median], n pairs)")
    checks = [(r["model"], r["batch_size"], r["sync_free_tracked_region"]) for r in runs]
    for model, batch, check in checks:
        if check is not None:
            verdict = {True: "sync-free", False: "SYNCS", None: "not judged"}[check["sync_free"]]
            print(f"sync check {model} b={batch}: {verdict}" + (f" ({check['reason']})" if check["reason"] else ""))
    print(f"wrote {out}", file=sys.stderr)
    return 1 if any(c is not None and c["sync_free"] is False for _, _, c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
