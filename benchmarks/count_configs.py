"""How long does ``runprof count`` take on a real model's config? Every reference config, after import.

Each config is counted ``--repeat`` times through the CLI's own code path (``runprof.cli.main(["count",
PATH])``, output discarded), in one process where runprof and transformers are already imported. The
first count of a config also imports its modeling module and is reported apart (``first_s``); the target
is the median of the rest, under 0.5 s each. The totals are printed beside the reference table's, so a
fast wrong answer shows.

    python benchmarks/count_configs.py                 # JSON to benchmarks/results/count_configs.json
    python benchmarks/count_configs.py --repeat 3
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from runprof import count_params
from runprof.cli import main as cli_main

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "configs"
BUNDLED = Path(__file__).resolve().parents[1] / "runprof" / "models" / "configs"
TARGET_S = 0.5


def configs() -> list[Path]:
    """The shared reference configs when present, plus any the package ships that they lack."""
    found = {p.name: p for p in sorted(BUNDLED.glob("*.json"))}
    if SHARED.is_dir():
        found.update({p.name: p for p in sorted(SHARED.glob("*.json"))})
    return [found[k] for k in sorted(found)]


def time_count(path: Path, repeat: int) -> dict:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli_main(["count", str(path)])
        times.append(time.perf_counter() - t0)
        if code != 0:
            raise SystemExit(f"{path.name}: runprof count exited {code}")
    rest = times[1:] or times
    r = count_params(path)
    return {"config": path.name, "first_s": times[0], "median_s": statistics.median(rest), "max_s": max(rest),
            "repeats": len(rest), "total": r.params.total, "active_all": r.params.active_per_token.get("all")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="counts per config (the first is reported apart)")
    ap.add_argument("--out", default=str(RESULTS / "count_configs.json"))
    args = ap.parse_args()
    rows = []
    for path in configs():
        rows.append(time_count(path, max(args.repeat, 2)))
        print(f"  {path.name}: {rows[-1]['median_s']:.3f}s", file=sys.stderr)
    worst = max(r["median_s"] for r in rows)
    data = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
            "torch": torch.__version__, "target_median_s": TARGET_S, "worst_median_s": worst,
            "all_under_target": worst < TARGET_S, "configs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=2) + "\n")
    print(f"{'config':32s} {'total':>16s} {'first':>7s} {'median':>7s} {'max':>7s}")
    for r in rows:
        print(f"{r['config']:32s} {r['total']:>16,d} {r['first_s']:>6.2f}s {r['median_s']:>6.3f}s {r['max_s']:>6.3f}s")
    print(f"worst median {worst:.3f}s (target < {TARGET_S}s): {'met' if worst < TARGET_S else 'NOT met'}")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if worst < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
