"""FLOPs of one forward of tiny MoE models by runprof and by the FLOP counters people use, each tool in its own
process (they patch torch or trace the model; one must not see another's patches).

Tools: runprof (``runtime.flops``), torch's ``FlopCounterMode``, DeepSpeed's ``FlopsProfiler``, calflops, fvcore
and ptflops, where importable (``--site DIR`` adds a folder of optional packages to their path; a tool that is
missing is recorded as such). Models: the zoo's Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V3, gpt-oss, OLMoE and a
dense Llama, batch 2 x 21 positions, under transformers' default kernels (sdpa attention, grouped_mm experts) and
under eager attention and eager experts. The reference is runprof's ``total_eager_attention`` (the convention a
counter of the eager kernels sees); MAC counters (fvcore, ptflops) are doubled and say so.

    python benchmarks/flops_peers.py [--site /tmp/peers_pkgs] [--out benchmarks/results/flops_peers.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3", "gpt_oss", "olmoe", "llama")
TOOLS = ("runprof", "flop_counter", "deepspeed", "calflops", "fvcore", "ptflops")
MACS = {"fvcore": "fvcore counts one multiply-add as one flop: doubled",
        "ptflops": "ptflops reports MACs: doubled"}


def _model(model_type: str, impl: str):
    import torch

    from runprof.moe.discovery import find_moe_layers
    from tests.moe_zoo import tiny_model

    torch.set_num_threads(1)
    model = tiny_model(model_type)
    if impl == "eager":
        model.set_attn_implementation("eager")
        if find_moe_layers(model):
            model.set_experts_implementation("eager")
    ids = torch.randint(3, 128, (2, 21), generator=torch.Generator().manual_seed(1))
    return model, ids


def _logits_module():
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids):
            return self.model(ids, use_cache=False).logits

    return Logits


def _Logits(model):  # noqa: N802 - a class made on demand (torch is imported in the child only)
    return _logits_module()(model)


def _count(tool: str, model, ids) -> int:
    import torch

    with torch.no_grad():
        if tool == "runprof":
            import runprof

            with runprof.track(model, memory=False) as t:
                model(ids, use_cache=False)
            return t.result.runtime.flops.total_eager_attention
        if tool == "flop_counter":
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                model(ids, use_cache=False)
            return counter.get_total_flops()
        if tool == "deepspeed":
            from deepspeed.profiling.flops_profiler import FlopsProfiler

            prof = FlopsProfiler(model)
            prof.start_profile()
            try:
                model(ids, use_cache=False)
                return int(prof.get_total_flops())
            finally:
                prof.end_profile()
        if tool == "calflops":
            from calflops import calculate_flops

            flops, _, _ = calculate_flops(model=model, args=[ids], output_as_string=False, print_results=False,
                                          print_detailed=False)
            return int(flops)
        if tool == "fvcore":
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(_Logits(model), (ids,))  # jit tracing needs tensors out
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return 2 * int(analysis.total())
        if tool == "ptflops":
            from ptflops import get_model_complexity_info

            macs, _ = get_model_complexity_info(model, (21,), input_constructor=lambda _: {"input_ids": ids,
                                                                                            "use_cache": False},
                                                as_strings=False, print_per_layer_stat=False, verbose=False)
            return 2 * int(macs)
    raise ValueError(tool)


def child(tool: str) -> int:
    """One tool over every model and kernel choice; prints one JSON object."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    out: dict = {}
    for model_type in MODELS:
        for impl in ("default", "eager"):
            key = f"{model_type}/{impl}"
            try:
                model, ids = _model(model_type, impl)
                t0 = time.perf_counter()
                out[key] = {"flops": _count(tool, model, ids), "seconds": time.perf_counter() - t0}
            except ImportError as e:
                print(json.dumps({"missing": f"{type(e).__name__}: {e}"[:200]}))
                return 0
            except Exception as e:  # noqa: BLE001 - a peer failing on a model is a result
                out[key] = {"flops": None, "error": f"{type(e).__name__}: {e}".splitlines()[0][:200]}
    print(json.dumps(out))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--site", help="a folder of optional packages (deepspeed, calflops, fvcore, ptflops)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "flops_peers.json"))
    p.add_argument("--tool", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.tool:
        return child(args.tool)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(x for x in (str(ROOT), args.site) if x))
    results: dict = {"models": list(MODELS), "batch": 2, "positions": 21, "reference": "runprof eager", "tools": {}}
    for tool in TOOLS:
        try:
            done = subprocess.run([sys.executable, __file__, "--tool", tool], capture_output=True, text=True,
                                  env=env, timeout=600, cwd=ROOT)
            last = (done.stdout.strip().splitlines() or ["{}"])[-1]
            results["tools"][tool] = json.loads(last) if last.startswith("{") else {"missing": done.stderr[-300:]}
        except subprocess.TimeoutExpired:
            results["tools"][tool] = {"missing": "timed out after 600 s"}
        if tool in MACS:
            results["tools"][tool]["note"] = MACS[tool]
        print(f"{tool}: done", file=sys.stderr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    ref = results["tools"]["runprof"]
    for key in ref:
        row = [f"{key:22s}"] + [str(results["tools"][t].get(key, {}).get("flops", "-")) for t in TOOLS]
        print(" ".join(f"{c:>13s}" for c in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
