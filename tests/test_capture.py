"""Constant-memory capture: on-device counters equal what the full trace says, the trace is exactly what the
routers produced, memory does not grow with the steps, watch records are independent, a second track() is cheap."""
from __future__ import annotations

import dataclasses
import json
import time
import tracemalloc

import pytest
import torch

import runprof
from runprof.moe import find_moe_layers

from .moe_zoo import tiny_model


def _gen(model, ids, new=4, **kw):
    with torch.inference_mode():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                              do_sample=False, pad_token_id=0, **kw)


def _ids(batch=1, length=6, seed=0):
    return torch.randint(3, 120, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model_type", ["mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss", "longcat_flash", "zaya"])
def test_counters_equal_the_trace(model_type):
    """Distinct experts per step and co-activation from the counters, against the same run's trace by hand."""
    model = tiny_model(model_type)
    with runprof.track(model, trace=True, coactivation=True, memory=False) as t:
        _gen(model, _ids(2, 7), new=3)
    rt, trace = t.result.runtime, t.trace
    for li, layer in enumerate(trace.layers):
        rows = list(zip(layer.ids.tolist(), layer.step.tolist(), layer.real.tolist()))
        for s, step in enumerate(rt.steps):  # every row computed counts (weight traffic)
            assert step.experts_touched[li] == len({e for ids, st, _ in rows if st == s for e in ids if e >= 0})
        e = layer.num_experts
        pairs = [[0] * e for _ in range(e)]
        for ids, _, real in rows:
            used = [x for x in ids if x >= 0] if real else []
            for a in used:
                for b in used:
                    pairs[a][b] += 1
        assert [list(r) for r in rt.coactivation[li]] == pairs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_trace_is_what_the_routers_gave(dtype):
    """An independent hook records every experts call's top_k_index and weights: the trace holds the same ids in
    order and the same weights, kept in the routers' own dtype (exact; 2 bytes where a router gives bf16)."""
    model = tiny_model("mixtral").to(dtype)
    seen: list[list[torch.Tensor]] = [[] for _ in find_moe_layers(model)]
    weights: list[list[torch.Tensor]] = [[] for _ in find_moe_layers(model)]
    def keep(i, args):  # returns None: the call's inputs stay as they were
        seen[i].append(args[1].clone())
        weights[i].append(args[2].clone())

    handles = [layer.experts.register_forward_pre_hook(lambda m, a, k, i=i: keep(i, a), with_kwargs=True)
               for i, layer in enumerate(find_moe_layers(model))]
    try:
        with runprof.track(model, trace=True, weights=True, memory=False) as t:
            _gen(model, _ids(2, 5), new=3)
    finally:
        for h in handles:
            h.remove()
    for li, layer in enumerate(t.trace.layers):
        assert torch.equal(layer.ids, torch.cat(seen[li]).long())
        assert torch.equal(layer.weights, torch.cat(weights[li]).float())
    given = {w.dtype for per_layer in weights for w in per_layer}  # Mixtral's router gives fp32 in a bf16 model
    assert len(given) == 1 and {w.dtype for w in t._cap.trace.weights} == given
    again = t.result.runtime.expert_load
    assert all(sum(load) == (2 * 5 + 2 * 2) * 2 for load in again)


def test_memory_does_not_grow_with_decode_steps():
    """2,000 decode steps of a tiny model: runprof's device bytes stay the same from step 200 on, and the Python
    memory runprof allocates between step 200 and step 2,000 stays under 64 KiB (per-step records are capped)."""
    model = tiny_model("mixtral", max_position_embeddings=4096).eval()
    from transformers import DynamicCache

    ids = _ids(1, 4)
    t = runprof.track(model, memory=False, max_steps=100)
    cache = DynamicCache(config=model.config)
    sizes = []
    with torch.inference_mode(), t:
        out = model(ids, past_key_values=cache, use_cache=True)
        tracemalloc.start()
        for step in range(2000):
            nxt = out.logits[:, -1:].argmax(-1)
            out = model(nxt, past_key_values=cache, use_cache=True)
            if step == 199:
                sizes.append(sum(t._cap.nbytes().values()))
                before = tracemalloc.take_snapshot()
        sizes.append(sum(t._cap.nbytes().values()))
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
    grown = sum(d.size_diff for d in after.compare_to(before, "filename") if "runprof" in str(d.traceback))
    assert sizes[0] == sizes[1], sizes
    assert grown < 64 * 1024, grown
    rt = t.result.runtime
    assert rt.tokens["decode"] == 2000 and len(rt.steps) == 100 and rt.observation.steps == 2001
    assert all(sum(load) == (4 + 2000) * 2 for load in rt.expert_load)


@pytest.mark.parametrize("trace", [False, True])
def test_inference_mode_inside_or_outside_the_region(trace):
    """Buffers that grow under ``torch.inference_mode()`` (a 400-row prefill, 300 decode steps) are still
    updated after it (the last flush at stop), and a tracker started inside it runs hooks outside it."""
    model = tiny_model("mixtral", max_position_embeddings=1024).eval()
    ids = _ids(2, 200)
    with runprof.track(model, memory=False, trace=trace) as t:
        with torch.inference_mode():
            _gen(model, ids, new=300)
    assert t.result.runtime.tokens == {"prefill": 400, "decode": 2 * 299, "train": 0}
    assert all(sum(load) == (400 + 2 * 299) * 2 for load in t.result.runtime.expert_load)
    with torch.inference_mode():
        inner = runprof.track(model, memory=False, trace=trace)
        inner.start()
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, min_new_tokens=3,
                       do_sample=False, pad_token_id=0)
    r = inner.stop()
    assert r.runtime.tokens == {"prefill": 400, "decode": 4, "train": 0}
    with runprof.watch(model, memory=False) as w:
        for mode in (torch.inference_mode, torch.no_grad, torch.inference_mode):
            with mode():
                model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, min_new_tokens=2,
                               do_sample=False, pad_token_id=0)
    assert [rec.runtime.tokens["decode"] for rec in w.records] == [2, 2, 2]


@pytest.mark.parametrize("experts, id_bytes", [(8, 1), (128, 1), (129, 2)])
def test_trace_bytes_per_token_layer(experts, id_bytes):
    """Trace mode keeps k ids per token and layer in the smallest signed type that holds E ids and the -1 of an
    empty slot (int8 up to 128 experts), plus 9 bytes per row for all layers (real flag, int32 step and
    position); the buffers double, so what is allocated is at most twice what is used (1,024 rows at least)."""
    model = tiny_model("qwen3_moe", num_experts=experts, num_experts_per_tok=2, max_position_embeddings=512).eval()
    with runprof.track(model, memory=False, trace=True) as t:
        _gen(model, _ids(2, 5), new=300)
    tr = t._cap.trace
    layers = sum(ids.shape[0] for ids in tr.ids)
    assert {ids.element_size() for ids in tr.ids} == {id_bytes}
    assert {ids.shape[2] for ids in tr.ids} == {2} and tr.used == 2 * 5 + 2 * 299
    rows = tr.real.numel()
    assert tr.used <= rows <= max(1024, 2 * tr.used)
    ids_bytes = sum(ids.numel() * ids.element_size() for ids in tr.ids)
    assert ids_bytes == rows * layers * 2 * id_bytes
    assert tr.real.numel() * (tr.real.element_size() + tr.step.element_size() + tr.position.element_size()) \
        == rows * 9
    assert tuple(t.trace.layers[0].ids.shape) == (tr.used, 2)  # on the CPU: the rows used, int64


def test_watch_records_are_independent():
    """The third record of a watch equals a fresh tracker's result for the same call."""
    model = tiny_model("mixtral").eval()
    prompts = [_ids(1, n, seed=n) for n in (4, 6, 5)]
    with runprof.watch(model) as w:
        for p in prompts:
            _gen(model, p)
    records = w.records
    assert [r.runtime.tokens["prefill"] for r in records] == [4, 6, 5]
    assert [r.extra["record"]["index"] for r in records] == [0, 1, 2]
    with runprof.track(model, memory=False, modules=False) as fresh:
        _gen(model, prompts[2])
    third, ref = records[2].runtime, fresh.result.runtime
    assert dataclasses.replace(third, wall_s=0, latency=None) == dataclasses.replace(ref, wall_s=0, latency=None)
    assert w.result.runtime.tokens["prefill"] == 4 + 6 + 5  # the combination of every record


def test_watch_sampling_calls_and_jsonl(tmp_path):
    model = tiny_model("mixtral").eval()
    path = tmp_path / "records.jsonl"
    with runprof.watch(model, sample_every=2, jsonl=path) as w:
        for n in (3, 4, 5, 6, 7):
            _gen(model, _ids(1, n, seed=n))
    assert [r.runtime.tokens["prefill"] for r in w.records] == [3, 5, 7]  # records 0, 2, 4
    lines = path.read_text().splitlines()
    assert [json.loads(x)["runtime"]["tokens"]["prefill"] for x in lines] == [3, 5, 7]
    assert runprof.load_result(json.loads(lines[1])).runtime.tokens["prefill"] == 5
    with runprof.watch(model, per="call") as w:
        with w.call():
            _gen(model, _ids(1, 3))
            _gen(model, _ids(1, 4))
    assert [r.runtime.tokens["prefill"] for r in w.records] == [3 + 4]


def test_a_second_track_of_an_unchanged_model_reuses_its_facts():
    """The static counts are found once per model; a parameter change (here: set_top_k) finds them again."""
    model = tiny_model("mixtral").eval()
    first = runprof.track(model, memory=False)
    first.start()
    first.stop()
    again = runprof.track(model, memory=False)
    again.start()
    again.stop()
    assert again.static is first.static
    with runprof.set_top_k(model, 1):
        changed = runprof.track(model, memory=False)
        changed.start()
        changed.stop()
    assert changed.static is not first.static and changed.static.moe.top_k == 1


def test_start_and_stop_cost_of_a_second_track():
    """Timed on a small model on this machine: a second track() starts and stops in a few milliseconds (the
    2 ms target for a 115M Mixtral is measured in benchmarks/capture_cost.py)."""
    model = tiny_model("mixtral").eval()
    runprof.track(model).start().stop()
    times = []
    for _ in range(20):
        t = runprof.track(model)
        t0 = time.perf_counter()
        t.start()
        t.stop()
        times.append(time.perf_counter() - t0)
    assert min(times) < 0.01


def test_a_layer_subset_captures_those_layers_only():
    model = tiny_model("mixtral").eval()
    with runprof.track(model, memory=False) as full:
        _gen(model, _ids())
    with runprof.watch(model, layers=["model.layers.1.mlp"]) as w:
        _gen(model, _ids())
    rt = w.records[0].runtime
    assert rt.moe_layer_names == ("model.layers.1.mlp",) and rt.expert_load == full.result.runtime.expert_load[1:]
    assert rt.active_params_per_token["all"].mean is None and rt.params_touched is None
    assert w.records[0].reconcile[0].cause.value == "layer_subset"
    with pytest.raises(runprof.RunprofError, match="not one of the 2 MoE layers"):
        runprof.track(model, layers=[5]).start()
