"""FLOPs, MFU and decode bandwidth on a GPU: one ``PASS``/``FAIL``/``SKIP`` line per check, JSON as it goes.

The ``--flops`` slot of ``gpu_checks.sh`` (``flops_gpu.py --out DIR [--quick] [--dry-run]``); plain Python,
torch and transformers only (runprof from this checkout). Checks:

- ``flops.exact``: the shipped model under eager attention and eager experts on the GPU: runprof's
  ``total_eager_attention`` equals ``FlopCounterMode``'s total for a forward and for ``generate()``;
- ``flops.shipped``: the shipped tiny MoE in bf16, prefill and decode at batch 1 and 8: FLOPs, achieved FLOP/s,
  MFU against the device's table peak, decode bytes per step (equal to the hand count: non-expert weights +
  experts touched + KV read) and bandwidth utilization;
- ``flops.mixtral_8x7b``: a real-shaped Mixtral-8x7B stack (hidden 4096, 8 experts of 14336, GQA 32/8; 2 decoder
  layers, 1 with ``--quick``; random bf16 weights, 32000-token vocabulary) — prefill of 2,048 tokens, decode at
  batch 1 and 32: MFU of the prefill, bandwidth utilization of the decode.

Without a GPU each check is SKIP with the reason (exit 0). ``--dry-run`` runs the same code on the CPU with
small shapes (the Mixtral stack at hidden 256, prefill 64), to prove the script before a GPU comes.

    python benchmarks/flops_gpu.py --out DIR [--quick] [--dry-run]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from gpu_common import ROOT, Report, expect, no_gpu_reason

import runprof
from runprof.models.loading import load_model
from runprof.results import Stat


def _perf(r: Any) -> dict[str, Any]:
    rt = r.runtime
    return {"flops": None if rt.flops is None else rt.flops.to_dict(),
            "utilization": None if rt.utilization is None else rt.utilization.to_dict(),
            "latency": None if rt.latency is None else rt.latency.to_dict(), "tokens": dict(rt.tokens)}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _generate(model: torch.nn.Module, ids: torch.Tensor, new: int) -> Any:
    with torch.inference_mode(), runprof.track(model, memory=False) as t:
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                       do_sample=False, pad_token_id=0)
    if ids.is_cuda:
        torch.cuda.synchronize()
    return t.result


def check_exact(dev: torch.device, quick: bool) -> tuple[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    model = load_model(None, device=dev, dtype=torch.float32).model
    model.set_attn_implementation("eager")
    model.set_experts_implementation("eager")
    ids = torch.arange(10, 31, device=dev).repeat(2, 1)
    out = {}
    for mode in ("forward", "generate"):
        with torch.inference_mode(), FlopCounterMode(display=False) as counter, runprof.track(model) as t:
            if mode == "forward":
                model(ids)
            else:
                model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
        got, want = t.result.runtime.flops.total_eager_attention, counter.get_total_flops()
        expect(got == want, f"{mode}: runprof {got:,} FLOPs, FlopCounterMode {want:,}")
        out[mode] = {"runprof": got, "flop_counter": want}
    return f"forward {out['forward']['runprof']:,} and generate {out['generate']['runprof']:,} FLOPs equal", out


def _hand_bytes(r: Any, batch: int, prompt: int) -> list[int]:
    """Decode bytes per step of the shipped model by hand (its bf16 shapes; see tests/test_flops.py)."""
    shared, per_expert, kv = 928_000, 3 * 128 * 192 * 2, 4 * (64 + 64) * 2
    decode = [s for s in r.runtime.steps if s.phase == "decode"]
    return [shared + sum(s.experts_touched) * per_expert + batch * (prompt + j) * kv for j, s in enumerate(decode, 1)]


def check_shipped(dev: torch.device, quick: bool) -> tuple[str, Any]:
    model = load_model(None, device=dev, dtype=torch.bfloat16).model
    data, parts = {}, []
    for batch in (1, 8):
        ids = torch.arange(10, 42, device=dev).repeat(batch, 1)
        _generate(model, ids, 4)  # warm-up (kernels, allocator)
        r = _generate(model, ids, 16 if quick else 64)
        u = r.runtime.utilization
        expect(r.runtime.flops is not None, f"batch {batch}: FLOPs not measured")
        expected = _hand_bytes(r, batch, ids.shape[1])
        expect(u.decode_bytes_per_step == Stat.of(expected),
               f"batch {batch}: decode bytes per step {u.decode_bytes_per_step} != hand count {sum(expected)}")
        data[f"batch{batch}"] = _perf(r)
        parts.append(f"b{batch}: MFU prefill {_pct(u.mfu['prefill'])}, "
                     f"decode bw {_pct(u.bandwidth_utilization['decode'])}")
    name = data["batch1"]["utilization"]["device_name"] or str(dev)
    return f"{name}: " + "; ".join(parts), data


def _mixtral_stack(dev: torch.device, quick: bool, dry: bool) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(ROOT / "runprof" / "models" / "configs" / "mixtral-8x7b-v0.1.json")
    cfg.num_hidden_layers = 1 if quick else 2
    if dry:
        cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size = 256, 512, 1024
        cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = 8, 2, 32
    torch.manual_seed(0)
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    return model.eval()


def check_mixtral(dev: torch.device, quick: bool, dry: bool = False) -> tuple[str, Any]:
    model = _mixtral_stack(dev, quick, dry)
    prompt = 64 if dry else 2048
    data: dict[str, Any] = {"layers": model.config.num_hidden_layers, "hidden": model.config.hidden_size,
                            "prefill_tokens": prompt}
    ids = torch.randint(3, model.config.vocab_size, (1, prompt), device=dev)
    _generate(model, ids[:, :128], 2)  # warm-up
    r = _generate(model, ids, 2)
    data["prefill_2k"] = _perf(r)
    mfu = r.runtime.utilization.mfu["prefill"]
    parts = [f"prefill {prompt}: {r.runtime.flops.by_phase['prefill']:.3g} FLOPs, MFU {_pct(mfu)}"]
    for batch in (1, 32):
        short = torch.randint(3, model.config.vocab_size, (batch, 32), device=dev)
        r = _generate(model, short, 8 if quick or dry else 32)
        u = r.runtime.utilization
        data[f"decode_batch{batch}"] = _perf(r)
        expect(u.decode_bytes_per_step.count > 0, f"decode batch {batch}: no bytes per step (routing incomplete?)")
        parts.append(f"decode b{batch}: {u.decode_bytes_per_step.mean / 2**30:.3g} GiB/step, "
                     f"bw {_pct(u.bandwidth_utilization['decode'])}, MFU {_pct(u.mfu['decode'])}")
    return "; ".join(parts), data


CHECKS = {"exact": check_exact, "shipped": check_shipped, "mixtral_8x7b": check_mixtral}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for flops_gpu.json")
    ap.add_argument("--quick", action="store_true", help="shorter decodes, a 1-layer Mixtral stack")
    ap.add_argument("--dry-run", action="store_true", help="every check on the CPU, small shapes (no GPU needed)")
    args = ap.parse_args(argv)
    if args.dry_run:
        torch.set_num_threads(1)
    report = Report(args.out / "flops_gpu.json", "flops_gpu.py", dry_run=args.dry_run, quick=args.quick)
    missing = None if args.dry_run else no_gpu_reason()
    dev = torch.device("cpu" if args.dry_run else "cuda")
    t0 = time.perf_counter()
    for name, check in CHECKS.items():
        if missing:
            report.record(f"flops.{name}", "SKIP", missing, 0.0)
            continue
        if name == "mixtral_8x7b":
            report.run(f"flops.{name}", lambda: check_mixtral(dev, args.quick, args.dry_run))
        else:
            report.run(f"flops.{name}", lambda check=check: check(dev, args.quick))
    report.data["seconds"] = time.perf_counter() - t0
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
