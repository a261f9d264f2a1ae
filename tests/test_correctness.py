"""Never a silently wrong number: torch.compile, pipelines, training and checkpointing, beams, returned
sequences, early EOS, a reused tracker, a static cache, newer transformers' warnings. Every expected number is
derived by hand or from an eager, untracked run of the same thing."""
from __future__ import annotations

import dataclasses
import logging
import warnings

import pytest
import torch

import runprof
from runprof.results import Cause

from .moe_zoo import tiny_model

K = 2  # the tiny Mixtral's top-k
LAYERS = 2  # its MoE layers


def _ids(batch: int = 1, length: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 120, (batch, length), generator=torch.Generator().manual_seed(seed))


def _gen(model, ids, **kw):
    kw = {"max_new_tokens": 4, "min_new_tokens": 4, "do_sample": False, "pad_token_id": 0, **kw}
    with torch.inference_mode():
        return model.generate(ids, attention_mask=torch.ones_like(ids), **kw)


def _same_measurements(a, b) -> None:
    """Everything measured, except wall time and the memory ledger (process memory differs run to run)."""
    ra, rb = a.runtime, b.runtime
    assert dataclasses.replace(ra, wall_s=0.0, latency=None) == dataclasses.replace(rb, wall_s=0.0, latency=None)
    assert a.reconcile == b.reconcile


def _dynamo_counters():
    from torch._dynamo.utils import counters

    return dict(counters["stats"]), sum(counters["graph_break"].values())


# --- torch.compile -----------------------------------------------------------------------------------------
def test_a_compiled_wrapper_is_tracked_through_its_module():
    model = tiny_model("mixtral").eval()
    ids = _ids()
    with runprof.track(model, memory=False) as eager:
        _gen(model, ids)
    torch._dynamo.reset()
    cm = torch.compile(model, backend="eager")
    with runprof.track(cm, memory=False) as t:  # cm.generate runs the original module's __call__
        _gen(cm, ids)
    assert t.result.runtime.tokens == {"prefill": 6, "decode": 3, "train": 0}
    rt = t.result.runtime
    assert rt.observation.compiled and rt.observation.complete  # device-only hooks, every step seen
    _same_measurements(dataclasses.replace(t.result, runtime=dataclasses.replace(rt, observation=eager.result.runtime
                                                                                 .observation)), eager.result)
    assert not runprof.tracking.is_tracked(cm)


def test_a_compiled_forward_compiles_the_same_graphs_and_measures_exactly():
    """Hooks present when the forward is compiled are traced into it: same number of graphs as untracked, no
    graph break, and the eager numbers exactly."""
    ids = _ids()
    model = tiny_model("mixtral").eval()
    with runprof.track(model, memory=False) as eager:
        expected_out = _gen(model, ids)
    counts = []
    for tracked in (False, True):
        torch._dynamo.reset()
        from torch._dynamo.utils import counters

        counters.clear()
        m = tiny_model("mixtral").eval()
        m.forward = torch.compile(m.forward, backend="eager")
        if tracked:
            with runprof.track(m, memory=False) as t:
                out = _gen(m, ids)
        else:
            out = _gen(m, ids)
        assert torch.equal(out, expected_out)
        counts.append(_dynamo_counters())
    (untracked, breaks0), (tracked_stats, breaks1) = counts
    assert tracked_stats.get("unique_graphs") == untracked.get("unique_graphs") and breaks1 == breaks0 == 0
    assert t.result.runtime.observation.compiled
    rt, ert = t.result.runtime, eager.result.runtime
    assert (rt.expert_load, rt.active_params_per_token, rt.experts_per_token, rt.counts) == \
        (ert.expert_load, ert.active_params_per_token, ert.experts_per_token, ert.counts)
    assert Cause.MODULES_NOT_RECORDED in [c for c, _ in rt.observation.notes]


def test_hooks_added_after_compilation_are_reported_not_trusted():
    """torch.compile skips module hooks added after the first compiled call: runprof sees the steps but no
    routing, and says so instead of reporting per-token figures it did not measure."""
    torch._dynamo.reset()
    model = tiny_model("mixtral").eval()
    model.forward = torch.compile(model.forward, backend="eager")
    ids = _ids()
    _gen(model, ids)  # compiled without runprof's hooks
    with runprof.track(model, memory=False) as t:
        _gen(model, ids)
    rt = t.result.runtime
    assert rt.observation.missed_layer_steps == LAYERS * 4 and not rt.observation.complete
    assert rt.active_params_per_token["all"].mean is None and rt.expert_load == ()
    assert t.result.reconcile[0].cause is Cause.ROUTING_NOT_OBSERVED
    assert rt.tokens["prefill"] == 6  # what the step hook (outside the compiled frame) saw is still exact
    torch._dynamo.reset()


def test_a_pipeline_is_tracked_through_its_model():
    from transformers import pipeline

    loaded = runprof.load_model()
    pipe = pipeline("text-generation", model=loaded.model, tokenizer=loaded.tokenizer, device="cpu")
    with runprof.track(pipe, memory=False) as t:
        pipe("def f(x):", max_new_tokens=3, min_new_tokens=3, do_sample=False)
    prompt = len(loaded.tokenizer("def f(x):")["input_ids"])
    c = t.result.runtime.counts
    assert (c.prompt, c.generated, c.sequences) == (prompt, 3, 1)
    assert t.result.runtime.active_params_per_token["all"].min == t.result.params.active_per_token["all"]


# --- training ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_training_step_is_a_train_forward_and_recomputation_is_not_a_token(checkpointing):
    model = tiny_model("mixtral").train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    ids = _ids(2, 12)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with runprof.track(model, memory=False) as t:
        loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
    rt = t.result.runtime
    assert rt.tokens == {"prefill": 0, "decode": 0, "train": 24}
    assert [s.phase for s in rt.steps] == ["train"]
    assert all(sum(load) == 24 * K for load in rt.expert_load)  # rows x k per layer, once
    assert rt.observation.recomputed_calls == (LAYERS if checkpointing else 0)
    assert rt.active_params_per_token["all"].min == rt.active_params_per_token["all"].max == \
        t.result.params.active_per_token["all"]
    assert rt.counts.cause is Cause.NOT_GENERATE and rt.counts.rows["train"] == 24


# --- rows and tokens -----------------------------------------------------------------------------------------
def test_beams_multiply_rows_not_tokens():
    model = tiny_model("mixtral").eval()
    with runprof.track(model, memory=False) as t:
        out = _gen(model, _ids(), num_beams=2)
    c = t.result.runtime.counts
    assert out.shape == (1, 6 + 4)
    assert (c.prompt, c.generated, c.sequences) == (6, 4, 1)  # min_new_tokens = max_new_tokens: exact
    assert c.rows == {"prefill": 2 * 6, "decode": 2 * 3, "train": 0}  # 2 beams
    with runprof.track(model, memory=False) as t2:
        _gen(model, _ids(), num_beams=2, min_new_tokens=None)
    assert t2.result.runtime.counts.generated is None and t2.result.runtime.counts.cause is Cause.BEAM_LENGTHS


def test_returned_sequences_are_counted_once_per_prompt():
    model = tiny_model("mixtral").eval()
    torch.manual_seed(0)
    with runprof.track(model, memory=False) as t:
        out = _gen(model, _ids(), do_sample=True, num_return_sequences=3)
    c = t.result.runtime.counts
    assert out.shape == (3, 10)
    assert (c.prompt, c.generated, c.sequences) == (6, 3 * 4, 3)
    assert c.rows == {"prefill": 3 * 6, "decode": 3 * 3, "train": 0}


def test_rows_after_eos_are_marked_and_feed_no_expert_load():
    model = tiny_model("mixtral").eval()
    ids = _ids(2, 6, seed=3)
    free = _gen(model, ids, max_new_tokens=6, min_new_tokens=None)[:, 6:]
    eos = int(free[1, 1])  # row 1's second new token becomes the EOS
    assert eos not in free[0].tolist()[:5]
    with runprof.track(model, memory=False) as t:
        out = _gen(model, ids, max_new_tokens=6, min_new_tokens=None, eos_token_id=eos)
    new = out[:, 6:].tolist()
    lengths = [row.index(eos) + 1 if eos in row else len(row) for row in new]  # row 1: 2 tokens (EOS included)
    assert lengths == [6, 2]
    rt = t.result.runtime
    c = rt.counts
    assert c.generated == sum(lengths) == 8
    # decode steps 1..5 feed tokens 1..5; row 1 feeds its EOS at step 2: steps 2..5 are computed for nothing
    assert c.finished_rows == 4 and c.rows["decode"] == 2 * 5
    assert rt.tokens == {"prefill": 12, "decode": 5 + 1, "train": 0}
    assert all(sum(load) == (12 + 6) * K for load in rt.expert_load)
    assert all(sum(load) == (12 + 10) * K for load in rt.expert_load_computed)  # what the experts computed


def test_a_reused_tracker_starts_from_nothing():
    model = tiny_model("mixtral").eval()
    t = runprof.track(model, memory=False)
    with t:
        _gen(model, _ids())
    with t:
        _gen(model, _ids(seed=1))
    with runprof.track(model, memory=False) as fresh:
        _gen(model, _ids(seed=1))
    _same_measurements(t.result, fresh.result)
    assert t.result.runtime.tokens == {"prefill": 6, "decode": 3, "train": 0}


def test_a_static_cache_measures_like_a_dynamic_one():
    model = tiny_model("mixtral").eval()
    with runprof.track(model, memory=False) as dynamic:
        a = _gen(model, _ids())
    with runprof.track(model, memory=False) as static:
        b = _gen(model, _ids(), cache_implementation="static")
    assert torch.equal(a, b)
    _same_measurements(static.result, dynamic.result)


def test_a_tracked_run_prints_nothing_the_untracked_run_does_not(caplog):
    model = tiny_model("mixtral").eval()

    def run(tracked: bool) -> list[str]:
        caplog.clear()
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG - 5):
            warnings.simplefilter("always")
            if tracked:
                with runprof.track(model):
                    _gen(model, _ids())
            else:
                _gen(model, _ids())
        return sorted({str(w.message) for w in caught} | {r.getMessage() for r in caplog.records
                                                          if not r.name.startswith("runprof")})

    assert run(True) == run(False)


def test_parameters_replaced_inside_the_region_are_refused():
    model = tiny_model("mixtral").eval()
    with pytest.raises(runprof.RunprofError, match="changed shape"):
        with runprof.track(model, memory=False):
            model.lm_head.weight = torch.nn.Parameter(torch.zeros(7, 7))
            _ = 1


def test_fullgraph_compilation_survives_the_hooks():
    """The routing hooks are device ops only: fullgraph=True (which refuses any graph break) compiles with them."""
    torch._dynamo.reset()
    model = tiny_model("mixtral").eval()
    model.forward = torch.compile(model.forward, backend="eager", fullgraph=True)
    with runprof.track(model, memory=False) as t:
        _gen(model, _ids())
    rt = t.result.runtime
    assert rt.observation.complete and rt.active_params_per_token["all"].min == t.result.params.active_per_token["all"]
    torch._dynamo.reset()


def test_a_new_cache_is_a_new_prefill_even_when_it_reuses_a_freed_id():
    """Python reuses the id of a freed object: phases follow the cache object itself, not its id."""
    from transformers import DynamicCache

    model = tiny_model("mixtral").eval()
    with torch.inference_mode(), runprof.track(model, memory=False) as t:
        for _ in range(5):
            model(_ids(), past_key_values=DynamicCache(config=model.config), use_cache=True)
    assert [s.phase for s in t.result.runtime.steps] == ["prefill"] * 5
