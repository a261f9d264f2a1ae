"""The CUDA checks as a plain Python script: no pytest, no install, one ``PASS``/``FAIL``/``SKIP`` line each.

The GPU machine may hold nothing but torch, transformers and their kin, so these checks do not go through
pytest (``benchmarks/cuda_pytest.py`` runs the cuda-marked tests too, where pytest is there). Each check
mirrors a cuda-marked test or one of runprof's device promises:

- ``ledger``: weights + buffers vs the allocator after load, the KV row vs the cache's own tensors, NVML's
  device figure at least torch's reserved memory, the rows adding up to NVML's per-process figure
  (``tests/test_memory.py::test_cuda_ledger_matches_allocator_and_nvml``);
- ``sync_free_region``: a bf16 prefill and decode step under ``track`` with ``set_sync_debug_mode("error")``
  over the whole region, after the same region untracked shows transformers' own forward is sync-free
  (``tests/test_tracking.py::test_no_host_sync_on_cuda``);
- ``sync_free_hooks``: every runprof hook body under the sync check, for architectures whose hooks differ
  (the common experts pre-hook, JetMoE's and Llama-4's router output, DBRX, shared experts, groups);
- ``compare``: a checkpoint compared on CUDA finds the one changed element; a snapshot on CUDA equals one on
  the CPU (``tests/test_compare.py::test_compare_on_cuda``);
- ``snapshot_transfers``: digests of a CUDA model with no host sync and no host->device copy, one ``.cpu()``;
- ``step_clock``: ``StepClock`` times GPU work, not host enqueueing (on ``cuda:1`` with the current device
  ``cuda:0`` where there are two GPUs).

    python benchmarks/cuda_checks.py --out DIR            # on a GPU machine (JSON: DIR/cuda_checks.json)
    python benchmarks/cuda_checks.py --out DIR --dry-run  # the same code on the CPU, sizes as given
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from gpu_common import ROOT, CheckFailed, Report, Skip, expect, no_gpu_reason
from torch.overrides import TorchFunctionMode

import runprof

QUICK_ARCHS = ("mixtral", "jetmoe", "llama4_text")
ARCHS = (*QUICK_ARCHS, "qwen2_moe", "deepseek_v3", "dbrx", "gemma4_text", "longcat_flash")


@contextlib.contextmanager
def sync_checked(device: torch.device) -> Iterator[None]:
    """Inside: any host sync on CUDA raises. On the CPU there is no sync debug mode: it checks nothing."""
    if device.type != "cuda":
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def _zoo(model_type: str, **overrides: Any) -> torch.nn.Module:
    """A tiny model of ``tests/moe_zoo.py``; Skip when this transformers has no such model type."""
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        import transformers

        raise Skip(f"transformers {transformers.__version__} has no model type {model_type!r}")
    from tests.moe_zoo import tiny_model

    return tiny_model(model_type, **overrides)


def _ids(device: torch.device, shape: tuple[int, int] = (1, 16)) -> torch.Tensor:
    return torch.randint(3, 100, shape, generator=torch.Generator().manual_seed(0)).to(device)


def check_ledger(dev: torch.device, quick: bool) -> tuple[str, Any]:
    from runprof.tensors import tensor_bytes

    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
    before = torch.cuda.memory_allocated(dev) if cuda else 0
    model = _zoo("mixtral", hidden_size=512, intermediate_size=1024).to(dev, torch.bfloat16)
    static = sum(tensor_bytes(t) for t in (*model.parameters(), *model.buffers()))
    if cuda:
        torch.cuda.synchronize(dev)
    allocated = torch.cuda.memory_allocated(dev) - before if cuda else static
    with torch.inference_mode(), runprof.track(model) as t:
        out = model(_ids(dev), use_cache=True)
    rows = {r.name: r for r in t.result.memory.rows}
    resident = rows["weights"].bytes + rows["buffers"].bytes
    expect(resident == static, f"weights + buffers rows {resident:,} B != the tensors' own {static:,} B")
    expect(abs(resident - allocated) <= 0.01 * allocated, f"rows {resident:,} B vs allocator {allocated:,} B")
    layers = out.past_key_values.layers
    cache = sum(x.numel() * x.element_size() for layer in layers for x in (layer.keys, layer.values))
    expect(rows["kv_cache"].bytes == cache, f"kv_cache row {rows['kv_cache'].bytes} != cache tensors {cache}")
    data = {name: {"bytes": r.bytes, "reason": str(r.reason) if r.reason else None} for name, r in rows.items()}
    if not cuda:
        expect(rows["nvml_used"].bytes is None, "NVML row on the CPU")
        return f"static rows exact ({resident:,} B), GPU rows null with reasons", data
    device_used = rows["nvml_device_used"]
    if device_used.bytes is None:  # the ledger's promise: unknown is null with the reason, never an error
        return f"allocator and KV rows exact; NVML unreadable here ({device_used.reason}): its rows not checked", data
    expect(device_used.bytes >= torch.cuda.memory_reserved(dev), "NVML device used < torch reserved")
    if rows["nvml_used"].bytes is None:
        return (f"allocator and KV rows exact; per-process sum not checkable ({rows['nvml_used'].reason}: "
                "NVML hides this process)"), data
    other = rows["cuda_context_and_other"].bytes
    expect(0 <= other <= 2 * 2**30, f"cuda_context_and_other {other:,} B outside [0, 2 GiB]")
    expect(t.result.memory.parts_total == rows["nvml_used"].bytes, "rows do not add up to NVML's figure")
    return f"rows add up to NVML's {rows['nvml_used'].bytes / 2**20:.0f} MiB; context {other / 2**20:.0f} MiB", data


def check_sync_free_region(dev: torch.device, quick: bool) -> tuple[str, Any]:
    model = _zoo("mixtral").to(dev, torch.bfloat16)
    ids = _ids(dev)
    with torch.inference_mode():
        out = model(ids, use_cache=True)  # warm-up outside the checked regions
        try:
            with sync_checked(dev):  # the control: transformers' own forward, untracked
                out = model(ids, use_cache=True)
                model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
        except RuntimeError as e:
            raise Skip(f"transformers' own forward syncs here ({str(e).splitlines()[0][:160]}): a tracked region "
                       "cannot be sync-free; sync_free_hooks checks runprof's hook bodies alone") from e
        with runprof.track(model, modules=False) as t:
            try:
                with sync_checked(dev):
                    out = model(ids, use_cache=True)
                    model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
            except RuntimeError as e:
                raise CheckFailed(f"host sync inside the tracked region: {str(e).splitlines()[0][:300]}") from e
    k = t.result.runtime.experts_per_token
    expect(k.min == k.max == 2, f"experts per token {k.min}..{k.max}, expected 2")
    where = "the whole tracked region" if dev.type == "cuda" else "ran the region (the CPU checks no syncs)"
    return f"prefill + decode step: {where}; 2 experts per token", None


@contextlib.contextmanager
def checked_hooks(dev: torch.device) -> Iterator[dict[str, int]]:
    """Every runprof hook body runs under the sync check; yields the calls counted per kind."""
    from runprof.tracking.collectors import RoutingCollector, StepCollector

    calls = {"step": 0, "routing": 0}
    originals = [(StepCollector, "__call__", "step"), (RoutingCollector, "pre_hook", "routing"),
                 (RoutingCollector, "post_hook", "routing")]
    saved = [(cls, attr, cls.__dict__[attr]) for cls, attr, _ in originals]

    def wrapped(fn: Callable[..., Any], kind: str) -> Callable[..., Any]:
        def hook(*args: Any, **kwargs: Any) -> Any:
            calls[kind] += 1
            with sync_checked(dev):
                return fn(*args, **kwargs)
        return hook

    try:
        for cls, attr, kind in originals:
            setattr(cls, attr, wrapped(cls.__dict__[attr], kind))
        yield calls
    finally:
        for cls, attr, fn in saved:
            setattr(cls, attr, fn)


def _hooks_one(model_type: str, dev: torch.device) -> dict[str, Any]:
    model = _zoo(model_type).to(dev, torch.bfloat16)
    ids = _ids(dev, (2, 8))
    with torch.inference_mode(), checked_hooks(dev) as calls, runprof.track(model, modules=False) as t:
        try:
            out = model(ids, use_cache=True)
            model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
        except RuntimeError as e:
            if "synchroniz" in str(e):
                raise CheckFailed(f"{model_type}: a hook body syncs: {str(e).splitlines()[0][:200]}") from e
            raise
    k = t.result.runtime.experts_per_token
    expect(calls["routing"] > 0 and k.count > 0, f"{model_type}: no routing hook ran")
    return {"hook_calls": dict(calls), "experts_per_token": [k.min, k.max]}


def check_sync_free_hooks(dev: torch.device, quick: bool) -> tuple[str, Any]:
    done, skipped, failed = {}, {}, {}
    for model_type in QUICK_ARCHS if quick else ARCHS:  # one architecture's failure does not hide the others'
        try:
            done[model_type] = _hooks_one(model_type, dev)
        except Skip as e:
            skipped[model_type] = str(e)
        except Exception as e:  # noqa: BLE001 - a sync (CheckFailed) or a model that does not run here
            failed[model_type] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    if failed:
        raise CheckFailed(f"{failed}; sync-free: {', '.join(done) or 'none'}")
    if not done:
        raise Skip(f"no architecture could be built: {skipped}")
    note = f"; skipped {skipped}" if skipped else ""
    return f"hook bodies sync-free in {', '.join(done)}{note}", {"checked": done, "skipped": skipped}


def check_compare(dev: torch.device, quick: bool) -> tuple[str, Any]:
    from safetensors.torch import load_file
    from transformers import MixtralConfig, MixtralForCausalLM

    from runprof.snapshots import compare, snapshot

    q_name = "model.layers.0.self_attn.q_proj.weight"
    torch.manual_seed(0)
    config = MixtralConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=100, num_local_experts=4)
    model = MixtralForCausalLM(config).eval()
    with torch.no_grad():
        model.get_parameter(q_name)[3, 5] = 0.5
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(Path(tmp) / "ref", max_shard_size="60KB")
        v4: dict[str, torch.Tensor] = {}
        for shard in sorted((Path(tmp) / "ref").glob("*.safetensors")):
            v4.update(load_file(shard))
        q = v4[q_name].clone()
        q[3, 5] = 0.75
        r = compare(Path(tmp) / "ref", {**v4, q_name: q}, device=dev)
    expect(len(r.value_mismatch) == 1 and r.value_mismatch[0].max_abs_diff == 0.25,
           f"expected one mismatch of 0.25, got {[(m.name, m.max_abs_diff) for m in r.value_mismatch]}")
    on_device = snapshot(model.to(dev))
    expect(compare(on_device, snapshot(model.cpu())).identical, f"a snapshot on {dev} differs from one on the CPU")
    return f"checkpoint vs state_dict on {dev}: one element, 0.25; snapshot on {dev} == on cpu", None


class _Calls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        self.names.append(getattr(func, "__name__", ""))
        return func(*args, **(kwargs or {}))


def check_snapshot_transfers(dev: torch.device, quick: bool) -> tuple[str, Any]:
    from runprof.snapshots import fingerprint
    from runprof.snapshots.sources import MemorySource

    model = _zoo("mixtral", hidden_size=256, intermediate_size=512).to(dev, torch.bfloat16)
    state = {**model.state_dict(), "transposed": model.lm_head.weight.t()}  # one tensor that is not contiguous
    source = MemorySource(state, label="checked")
    mods: dict[torch.device, torch.Tensor] = {}
    with _Calls() as calls, torch.no_grad(), sync_checked(dev):
        sums = [fingerprint.digest_tensor(source, n, m, mods) for n, m in source.metas().items()]
    copies = [n for n in calls.names if n in ("tensor", "as_tensor", "cpu", "cuda")]
    expect(not copies, f"host<->device copies while digesting: {copies[:8]}")
    with _Calls() as calls:
        snap = fingerprint.snapshot(state)
    expect(calls.names.count("cpu") == 1, f"{calls.names.count('cpu')} .cpu() calls for one device, expected 1")
    where = "no host sync" if dev.type == "cuda" else "on the CPU (syncs not checkable)"
    return f"{len(sums)} tensors digested with no copy, {where}; one .cpu() per snapshot", {"tensors": len(snap)}


def _matmuls(x: torch.Tensor, n: int) -> None:
    for _ in range(n):
        torch.mm(x, x)


def check_step_clock(dev: torch.device, quick: bool) -> tuple[str, Any]:
    from runprof.routing.timing import StepClock

    two = dev.type == "cuda" and torch.cuda.device_count() >= 2
    target = torch.device("cuda", 1) if two else dev
    size, dtype = (4096, torch.bfloat16) if target.type == "cuda" else (256, torch.float32)
    x = torch.randn(size, size, device=target, dtype=dtype)
    sync = (lambda: torch.cuda.synchronize(target)) if target.type == "cuda" else (lambda: None)
    _matmuls(x, 3)
    sync()
    t0 = time.perf_counter()
    _matmuls(x, 10)
    sync()
    n = min(5000, max(10, int(10 * 0.1 / max(time.perf_counter() - t0, 1e-6))))  # about 0.1 s of work
    with torch.cuda.device(0) if two else contextlib.nullcontext():
        clock = StepClock(target)
        t0 = time.perf_counter()
        clock.start()
        _matmuls(x, n)
        clock.mark()
        enqueued = time.perf_counter() - t0
        sync()
        wall = time.perf_counter() - t0
    (measured,) = clock.seconds()
    data = {"clock_device": str(target), "matmuls": n, "measured_s": measured, "host_enqueue_s": enqueued,
            "wall_s": wall}
    expect(measured >= 0.5 * wall, f"clock {measured * 1e3:.1f} ms < half the {wall * 1e3:.1f} ms of work "
                                   f"(host enqueue {enqueued * 1e3:.1f} ms): it timed the host, not the device")
    how = "current device cuda:0" if two else "one GPU: the cross-device case needs two" if target.type == "cuda" \
        else "perf_counter"
    return f"{measured * 1e3:.1f} ms of {wall * 1e3:.1f} ms wall on {target} ({how})", data


CHECKS: dict[str, Callable[[torch.device, bool], tuple[str, Any]]] = {
    "ledger": check_ledger, "sync_free_region": check_sync_free_region, "sync_free_hooks": check_sync_free_hooks,
    "compare": check_compare, "snapshot_transfers": check_snapshot_transfers, "step_clock": check_step_clock,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for cuda_checks.json")
    ap.add_argument("--quick", action="store_true", help=f"sync_free_hooks on {', '.join(QUICK_ARCHS)} only")
    ap.add_argument("--dry-run", action="store_true", help="run every check on the CPU (no GPU needed)")
    ap.add_argument("--only", help="comma-separated check names: " + ", ".join(CHECKS))
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(CHECKS)
    unknown = set(names) - set(CHECKS)
    if unknown:
        print(f"--only: unknown {sorted(unknown)}; known: {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    if args.dry_run:
        torch.set_num_threads(1)  # tiny models on a shared CPU: one thread is fastest and steadiest
    report = Report(args.out / "cuda_checks.json", "cuda_checks.py", dry_run=args.dry_run, quick=args.quick)
    missing = None if args.dry_run else no_gpu_reason()
    dev = torch.device("cpu" if args.dry_run else "cuda")
    for name in names:
        if missing:
            report.record(f"cuda.{name}", "SKIP", missing, 0.0)
            continue
        report.run(f"cuda.{name}", lambda check=CHECKS[name]: check(dev, args.quick))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
