"""Where does runprof's own time go? cProfile of generate() under track on the shipped tiny MoE.

Prints the runprof functions by cumulative time, the per-call cost of each hook, and the share of the run
spent inside runprof (hooks, start, stop); writes JSON to benchmarks/results/profile_tracker.json.

    python benchmarks/profile_tracker.py
"""
from __future__ import annotations

import cProfile
import json
import pstats
import sys
from pathlib import Path

import torch

import runprof
from runprof.models.loading import load_model

OUT = Path(__file__).parent / "results" / "profile_tracker.json"


def main() -> int:
    torch.set_num_threads(1)
    loaded = load_model(None, device="cpu")
    model, tok = loaded.model, loaded.tokenizer
    ids = tok(["def fibonacci(n):"] * 8, return_tensors="pt")["input_ids"]

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
            "runprof_s": inside, "runprof_share": inside / total, "functions": rows[:25]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=2) + "\n")
    print(f"profiled run: {total:.3f} s; inside runprof (start + hooks + stop): {inside:.4f} s "
          f"({100 * inside / total:.2f}%)")
    for r in rows[:15]:
        print(f"{r['cumtime_s']:8.4f} s {r['calls']:6d} calls {r['per_call_us']:9.1f} us/call  {r['function']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
