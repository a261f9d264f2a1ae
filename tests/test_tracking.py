"""Runtime tracking on tiny random models of every MoE architecture transformers 5.23 builds."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import runprof
from runprof.errors import InvalidArgumentError, TrackingError, UnsupportedModelError
from runprof.moe import find_moe_layers
from runprof.results import TrackResult
from runprof.tracking.collectors import RoutingCollector, StepCollector

from .moe_zoo import DENSE_MODEL_TYPES, EXCLUDED, MOE_MODEL_TYPES, tiny_model

PROMPT_LEN, NEW_TOKENS = 32, 32  # a 32-token prefill, then 31 decode steps (the prefill makes token 1)
# The named architectures run the full 32 + 31; the sweep over every type runs 8 + 3 to stay fast.
NAMED = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "gpt_oss", "llama4_text", "dbrx")

# Architectures whose measured active params legitimately differ from the static top-k figure:
BY_DESIGN = {
    "longcat_flash": "zero-computation experts: a token routed to one uses no expert parameters",
}
def _prepare(model: nn.Module) -> nn.Module:
    """Give hash-routed layers a real table: DeepSeek-V4 initialises ``tid2eid`` to zeros (real values come
    from the checkpoint), which would route every token to expert 0 twice."""
    for module in model.modules():
        table = getattr(module, "tid2eid", None)
        if isinstance(table, torch.Tensor):
            v, k = table.shape
            e = module.num_experts if hasattr(module, "num_experts") else model.config.n_routed_experts
            table.copy_((torch.arange(v)[:, None] * 3 + torch.arange(k)[None, :]) % e)
    return model


def _generate(model: nn.Module, batch: int = 1, prompt: int = PROMPT_LEN, new: int = NEW_TOKENS) -> torch.Tensor:
    vocab = model.config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, min(vocab, 120), (batch, prompt), generator=g)
    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                          do_sample=False, pad_token_id=0)


def _check_exact(r: TrackResult) -> None:
    rt = r.runtime
    k = rt.top_k["router"]
    assert k is not None and rt.top_k["measured"] == k
    # every token used exactly k distinct experts in every MoE layer
    assert (rt.experts_per_token.min, rt.experts_per_token.max) == (k, k)
    active = rt.active_params_per_token["all"]
    assert active.min == active.max == r.params.active_per_token["all"]
    for conv in ("exclude_input_embedding", "exclude_embeddings"):
        assert rt.active_params_per_token[conv].min == r.params.active_per_token[conv]
    tokens = rt.tokens["prefill"] + rt.tokens["decode"]
    for load in rt.expert_load:
        assert sum(load) == tokens * k  # assignments per layer = tokens x k


@pytest.mark.parametrize("model_type", MOE_MODEL_TYPES)
def test_every_moe_architecture_measures_exactly(model_type):
    prompt, new = (PROMPT_LEN, NEW_TOKENS) if model_type in NAMED else (8, 3)
    model = _prepare(tiny_model(model_type))
    with runprof.track(model) as t:
        _generate(model, prompt=prompt, new=new)
    r = t.result
    assert r.moe is not None and r.moe.moe_layers >= 1
    assert len(r.runtime.expert_load) == r.moe.moe_layers
    steps = r.runtime.steps
    assert steps[0].phase == "prefill" and steps[0].tokens == prompt
    assert [s.phase for s in steps[1:]] == ["decode"] * (new - 1)
    assert r.runtime.tokens == {"prefill": prompt, "decode": new - 1}
    if model_type in BY_DESIGN:
        rt = r.runtime
        assert rt.experts_per_token.max <= rt.top_k["router"]
        assert rt.active_params_per_token["all"].max <= r.params.active_per_token["all"]
        tokens = prompt + new - 1
        assert all(sum(load) <= tokens * rt.top_k["router"] for load in rt.expert_load)
    else:
        _check_exact(r)


def test_unreadable_architecture_raises_clear_error():
    """A model whose config declares experts but whose layers no rule or adapter can read."""
    from transformers import MixtralConfig

    class OpaqueMoE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = MixtralConfig(num_local_experts=4)
            self.secret_experts = nn.Linear(4, 16)

        def forward(self, x):
            return self.secret_experts(x)

    with pytest.raises(UnsupportedModelError, match=r"OpaqueMoE: the config declares 4 experts.*register_adapter"):
        with runprof.track(OpaqueMoE()):
            pass


def test_exclusions_are_listed_with_reasons():
    assert all(isinstance(v, str) and v for v in {**EXCLUDED, **BY_DESIGN}.values())
    assert len(MOE_MODEL_TYPES) >= 55  # transformers 5.23 has 58 MoE causal-LM types


@pytest.mark.parametrize("model_type", DENSE_MODEL_TYPES)
def test_dense_model_active_equals_total(model_type):
    model = tiny_model(model_type)
    with runprof.track(model) as t:
        model(torch.tensor([[5, 6, 7, 8]]))
    rt = t.result.runtime
    assert t.result.moe is None
    assert rt.active_params_per_token["all"].min == rt.active_params_per_token["all"].max == t.result.params.total
    assert rt.tokens == {"prefill": 4, "decode": 0}


def test_padding_is_not_counted():
    model = tiny_model("mixtral")
    ids = torch.randint(3, 100, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding: 4 pad tokens in row 1
    with runprof.track(model) as t:
        model.generate(ids, attention_mask=mask, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
    rt = t.result.runtime
    assert rt.tokens == {"prefill": 2 * 10 - 4, "decode": 2 * 2}
    k = rt.top_k["measured"]
    assert all(sum(load) == (16 + 4) * k for load in rt.expert_load)


def test_config_change_after_loading_is_flagged_and_set_top_k_works():
    model = tiny_model("mixtral")
    static = runprof.count_params(model)
    ppe, layers = static.moe.params_per_expert, static.moe.moe_layers
    ids = torch.randint(3, 100, (1, 12))
    model.config.num_experts_per_tok = 1  # routers copied k=2 at init: this changes nothing
    with runprof.track(model) as t:
        model(ids)
    rt = t.result.runtime
    assert rt.top_k == {"config": 1, "router": 2, "measured": 2}
    mismatch = [row for row in t.result.reconcile if "MISMATCH" in row.note]
    assert len(mismatch) == 1
    assert mismatch[0].delta == (2 - 1) * ppe * layers
    before = rt.active_params_per_token["all"].mean

    changes = runprof.set_top_k(model, 1)
    assert ("model.layers.0.mlp.gate.top_k", 2, 1) in changes
    with runprof.track(model) as t:
        model(ids)
    rt = t.result.runtime
    assert rt.top_k == {"config": 1, "router": 1, "measured": 1}
    assert rt.experts_per_token.max == 1
    # active params drop by exactly (2 − 1) x params per expert x MoE layers
    assert before - rt.active_params_per_token["all"].mean == (2 - 1) * ppe * layers
    assert not any("MISMATCH" in row.note for row in t.result.reconcile)


@pytest.mark.parametrize("model_type", ["qwen2_moe", "deepseek_v3", "gpt_oss", "llama4_text", "dbrx", "gemma4_text"])
def test_set_top_k_per_architecture(model_type):
    model = _prepare(tiny_model(model_type))
    runprof.set_top_k(model, 1)
    with runprof.track(model) as t:
        model(torch.randint(3, 100, (1, 8)))
    assert t.result.runtime.top_k["measured"] == 1
    assert t.result.runtime.experts_per_token.max == 1
    assert t.result.runtime.active_params_per_token["all"].mean == t.result.params.active_per_token["all"]


def test_set_top_k_refuses_hard_wired_k():
    with pytest.raises(InvalidArgumentError, match="cannot be changed"):
        runprof.set_top_k(tiny_model("jetmoe"), 1)


def test_set_top_k_rejects_bad_values():
    model = tiny_model("mixtral")
    with pytest.raises(InvalidArgumentError, match="out of range"):
        runprof.set_top_k(model, 0)
    with pytest.raises(InvalidArgumentError, match="out of range"):
        runprof.set_top_k(model, 99)
    with pytest.raises(InvalidArgumentError, match="no MoE layers"):
        runprof.set_top_k(tiny_model("llama"), 1)


def test_exception_inside_generate_removes_hooks_and_keeps_weights():
    model = tiny_model("mixtral")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mode = model.training

    class Boom(RuntimeError):
        pass

    def explode(module, args):
        raise Boom("inside generate")

    layer = find_moe_layers(model)[1]
    handle = layer.experts.register_forward_pre_hook(explode)
    try:
        with pytest.raises(Boom):
            with runprof.track(model):
                model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=2, do_sample=False)
    finally:
        handle.remove()
    assert not runprof.tracking.is_tracked(model)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training == mode


def test_state_dict_bit_identical_after_tracking():
    model = tiny_model("qwen2_moe")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config_before = model.config.to_dict()
    with runprof.track(model):
        _generate(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.config.to_dict() == config_before


def test_nested_tracking_raises():
    model = tiny_model("mixtral")
    with runprof.track(model):
        with pytest.raises(TrackingError, match="already being tracked"):
            runprof.track(model).start()


def test_result_before_exit_raises_and_round_trips_after():
    model = tiny_model("olmoe")
    with runprof.track(model) as t:
        with pytest.raises(TrackingError):
            _ = t.result
        model(torch.randint(3, 100, (1, 6)))
    d = json.loads(json.dumps(t.result.to_dict()))
    assert TrackResult.from_dict(d) == t.result
    assert {"model", "params", "moe", "bytes", "runtime", "reconcile"} <= set(d)
    assert set(d["runtime"]["top_k"]) == {"config", "router", "measured"}


def test_unused_module_is_reported():
    model = tiny_model("mixtral")
    model.unused_head = nn.Linear(4, 4)
    try:
        with runprof.track(model) as t:
            model(torch.randint(3, 100, (1, 6)))
    finally:
        del model.unused_head
    assert t.result.runtime.unused_modules == ("unused_head",)


def test_named_architectures_are_in_the_sweep():
    assert set(NAMED) <= set(MOE_MODEL_TYPES)


def test_distinct_experts_per_step_and_union():
    model = tiny_model("mixtral", num_local_experts=8)
    with runprof.track(model) as t:
        _generate(model)
    r = t.result
    steps = r.runtime.steps
    e, k = r.moe.num_experts, r.runtime.top_k["measured"]
    # a batch-1 decode step touches exactly k experts per layer; the 32-token prefill touches at most E
    assert all(s.experts_touched == (k,) * r.moe.moe_layers for s in steps[1:])
    assert all(k <= x <= e for x in steps[0].experts_touched)
    ppe = r.moe.params_per_expert
    base = r.params.total - r.moe.moe_layers * e * ppe
    assert steps[1].params_touched == base + r.moe.moe_layers * k * ppe
    assert r.runtime.params_touched <= r.params.total


class _Spy(torch.Tensor):
    """A tensor that records every torch function applied to it (to prove hooks never sync)."""

    calls: list[str] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.calls.append(getattr(func, "__name__", str(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


def test_hooks_touch_only_device_tensors():
    """The hook bodies run no host sync: no item/tolist/cpu/numpy/bool/nonzero/masked indexing."""
    model = tiny_model("mixtral")
    layer = find_moe_layers(model)[0]
    steps = StepCollector()
    collector = RoutingCollector(layer, steps)
    ids = torch.tensor([[1, 2, 3, 4]]).as_subclass(_Spy)
    mask = torch.ones(1, 4, dtype=torch.long).as_subclass(_Spy)
    _Spy.calls.clear()
    steps(model, (ids,), {"attention_mask": mask, "past_key_values": None})
    top = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]]).as_subclass(_Spy)
    weights = torch.rand(4, 2).as_subclass(_Spy)
    collector.pre_hook(layer.experts, (torch.zeros(4, 32), top, weights), {})
    forbidden = {"item", "tolist", "cpu", "numpy", "__bool__", "nonzero", "__index__", "__int__", "__float__",
                 "masked_select", "__format__", "__repr__"}
    assert not forbidden & set(_Spy.calls), _Spy.calls
    assert collector.trace.ids[0].device == top.device


@pytest.mark.cuda
def test_no_host_sync_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    model = tiny_model("mixtral").cuda()
    ids = torch.randint(3, 100, (1, 16), device="cuda")
    model(ids)  # warm-up outside the checked region
    with runprof.track(model, modules=False) as t:
        torch.cuda.set_sync_debug_mode("error")
        try:
            model(ids)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert t.result.runtime.experts_per_token.min == 2


def test_zaya_skip_slots_use_no_expert():
    """Zaya's router rewrites a 'skip' choice to expert 0 with weight 0: such a slot is no expert."""
    from runprof.moe.builtin import ZayaAdapter

    ids = torch.tensor([[0], [3], [0]])
    weights = torch.tensor([[0.0], [1.0], [1.0]])  # token 0 skipped; token 2 really chose expert 0
    got, _ = ZayaAdapter().from_experts_inputs((torch.zeros(3, 4), ids, weights), {})
    assert got.tolist() == [[-1], [3], [0]]
