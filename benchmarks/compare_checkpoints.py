"""How fast, and in how much memory, does runprof compare two checkpoints? Against the naive method.

Generates two sharded safetensors checkpoints of fp32 tensors (2 GiB each by default, largest tensor
512 MiB) under /tmp: the same tensors, split into 3 shards in the base and 2 in the target, with one
element changed in the target. Then compares them, in separate subprocesses, interleaved over rounds:

- ``runprof``: ``runprof.snapshots.compare(base_dir, target_dir)`` (streaming, memory-mapped windows);
- ``naive``: ``safetensors.torch.load_file`` of every shard of both (a dict per checkpoint), then
  ``torch.equal`` per key. safetensors >= 0.6 memory-maps lazily by default, so this "load" reads nothing
  until ``torch.equal`` touches the pages, and every page stays resident until the end;
- ``naive_loaded``: the same with ``load_file(..., backend="pread")``, which reads every tensor into
  process memory first (what "load both state_dicts fully" meant before lazy mapping, and what
  ``torch.load`` of ``.bin`` files still does).

Each subprocess reports the comparison's wall time (imports excluded) and its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, imports included; file-backed pages count). On Linux a
child's ru_maxrss starts at its parent's RSS when it execs, so the parent stays small: it imports
neither torch nor runprof, and the checkpoints are generated in a subprocess too. Both checkpoints are
read just before every run, so every run sees a warm page cache; the order of the methods rotates from
round to round. Throughput is the bytes of both
checkpoints over the median time. The checkpoints are deleted afterwards.

    python benchmarks/compare_checkpoints.py                  # JSON to benchmarks/results/
    python benchmarks/compare_checkpoints.py --size-gib 1 --rounds 1
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
MIB = 1 << 20
LARGEST_MIB = 512
CHANGED = "layers.0.weight"


def plan(size_gib: float) -> dict[str, tuple[int, ...]]:
    """Tensor shapes: a 512 MiB embedding, 256 MiB layer weights up to ``size_gib``, small norms."""
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (LARGEST_MIB * MIB // 4 // 4096, 4096)}
    layers = max(1, round((size_gib * 1024 - LARGEST_MIB) / 256))
    for i in range(layers):
        shapes[f"layers.{i}.weight"] = (8192, 8192)
        shapes[f"layers.{i}.norm"] = (8192,)
    return shapes


def _write_shards(root: Path, tensors: dict[str, Any], shards: int) -> None:
    from safetensors.torch import save_file

    root.mkdir(parents=True)
    names = list(tensors)
    total = sum(t.numel() * 4 for t in tensors.values())
    groups: list[list[str]] = [[]]
    size = 0
    for name in names:  # greedy split into `shards` groups of about equal bytes
        if size >= total * len(groups) / shards and len(groups) < shards:
            groups.append([])
        groups[-1].append(name)
        size += tensors[name].numel() * 4
    weight_map = {}
    for i, group in enumerate(groups):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: tensors[n] for n in group}, str(root / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in group})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))


def generate(tmp: Path, size_gib: float) -> tuple[Path, Path, dict[str, Any]]:
    import torch

    gen = torch.Generator().manual_seed(0)
    tensors = {n: torch.rand(s, generator=gen) for n, s in plan(size_gib).items()}
    _write_shards(tmp / "base", tensors, shards=3)
    tensors[CHANGED][17, 42] += 1.0  # the one difference both methods must find
    _write_shards(tmp / "target", tensors, shards=2)
    sizes = [t.numel() * 4 for t in tensors.values()]
    return tmp / "base", tmp / "target", {"tensors": len(sizes), "largest_tensor_bytes": max(sizes),
                                          "checkpoint_bytes": sum(sizes)}


def worker(method: str, base: str, target: str) -> dict[str, Any]:
    """Runs in a fresh process: one comparison, its time and the process's peak RSS."""
    import safetensors
    import torch

    import runprof.snapshots  # noqa: F401 - imported before the clock starts, as for the naive method

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rss_after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    if method == "runprof":
        from runprof.snapshots import compare

        result = compare(base, target)
        differing = [e.name for e in result.value_mismatch]
    else:
        from safetensors.torch import load_file

        backend = "pread" if method == "naive_loaded" else "mmap"
        a: dict[str, torch.Tensor] = {}
        b: dict[str, torch.Tensor] = {}
        for shard in sorted(Path(base).glob("*.safetensors")):
            a.update(load_file(shard, backend=backend))
        for shard in sorted(Path(target).glob("*.safetensors")):
            b.update(load_file(shard, backend=backend))
        differing = [k for k in a if not torch.equal(a[k], b[k])]
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak_rss_bytes": peak, "rss_after_import_bytes": rss_after_import,
            "differing": differing, "versions": {"torch": torch.__version__, "safetensors": safetensors.__version__}}


def _subprocess(*argv: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _warm(*dirs: Path) -> None:
    buf = bytearray(64 * MIB)
    for d in dirs:
        for f in sorted(d.iterdir()):
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass


def _machine() -> dict[str, Any]:
    mem = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "mem_total_bytes": int(mem["MemTotal"].split()[0]) * 1024,
            "load_average_at_start": list(os.getloadavg())}


def _summary(runs: list[dict[str, Any]], total_bytes: int) -> dict[str, Any]:
    median_s = statistics.median(r["seconds"] for r in runs)
    return {"median_s": median_s, "min_s": min(r["seconds"] for r in runs),
            "max_s": max(r["seconds"] for r in runs), "throughput_gb_per_s": total_bytes / median_s / 1e9,
            "peak_rss_bytes": int(statistics.median(r["peak_rss_bytes"] for r in runs)),
            "rss_after_import_bytes": int(statistics.median(r["rss_after_import_bytes"] for r in runs)),
            "differing": runs[0]["differing"], "runs_s": [r["seconds"] for r in runs],
            "peak_rss_runs_bytes": [r["peak_rss_bytes"] for r in runs]}


def _report(info: dict[str, Any], runs: dict[str, list[dict[str, Any]]], machine: dict[str, Any],
            rounds: int) -> dict[str, Any]:
    total = 2 * info["checkpoint_bytes"]
    summary = {m: _summary(r, total) for m, r in runs.items()}
    rss_target = 2 * info["largest_tensor_bytes"] + 300 * 10**6
    naive = ("naive", "naive_loaded")
    return {
        "benchmark": "compare_checkpoints", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine, **runs["runprof"][0]["versions"]},
        "setup": {**info, "dtype": "float32", "base_shards": 3, "target_shards": 2, "changed_tensor": CHANGED,
                  "rounds": rounds, "page_cache": "warm (both checkpoints read just before every run)",
                  "bytes_compared_per_run": total},
        "methods": summary,
        "speedup": {m: summary[m]["median_s"] / summary["runprof"]["median_s"] for m in naive},
        "targets": {"speedup_at_least": 2.0, "runprof_peak_rss_below_bytes": rss_target,
                    "speedup_met": {m: summary[m]["median_s"] >= 2 * summary["runprof"]["median_s"] for m in naive},
                    "rss_met": summary["runprof"]["peak_rss_bytes"] < rss_target},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-gib", type=float, default=2.0, help="size of each checkpoint (default 2 GiB)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the methods (default 5)")
    p.add_argument("--out", type=Path, default=RESULTS / "compare_checkpoints.json")
    p.add_argument("--worker", nargs=3, metavar=("METHOD", "BASE", "TARGET"), help=argparse.SUPPRESS)
    p.add_argument("--generate", metavar="DIR", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    if args.generate:
        base, target, info = generate(Path(args.generate), args.size_gib)
        print(json.dumps(info))
        return 0
    need = 2 * args.size_gib * 2**30 * 1.1
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < need:
        print(f"not enough space in {tempfile.gettempdir()}: {free / 2**30:.1f} GiB free, "
              f"{need / 2**30:.1f} GiB needed", file=sys.stderr)
        return 2
    machine = _machine()
    tmp = Path(tempfile.mkdtemp(prefix="runprof-bench-"))
    try:
        t0 = time.perf_counter()
        info = _subprocess("--generate", str(tmp), "--size-gib", str(args.size_gib))
        base, target = tmp / "base", tmp / "target"
        print(f"generated 2 x {info['checkpoint_bytes'] / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
        runs: dict[str, list[dict[str, Any]]] = {"naive": [], "naive_loaded": [], "runprof": []}
        methods = list(runs)
        for i in range(args.rounds):
            for method in methods[i % 3:] + methods[:i % 3]:  # rotated: no method always runs after another
                _warm(base, target)  # a previous run's memory may have pushed the files out of the page cache
                runs[method].append(_subprocess("--worker", method, str(base), str(target)))
                print(f"round {i + 1} {method}: {runs[method][-1]['seconds']:.2f} s, "
                      f"peak RSS {runs[method][-1]['peak_rss_bytes'] / MIB:.0f} MiB", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = _report(info, runs, machine, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup", "targets")}, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
