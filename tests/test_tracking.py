"""Runtime tracking on tiny random models of every MoE architecture transformers 5.23 builds."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import runprof
from runprof.errors import InvalidArgumentError, TrackingError, UnsupportedModelError
from runprof.moe import find_moe_layers
from runprof.results import Cause, TrackResult
from runprof.tracking.collectors import RoutingCollector, StepCollector
from runprof.tracking.trace import RoutingTrace

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


def _check_against_trace(r: TrackResult, trace: RoutingTrace) -> None:
    """Per-token active params, experts per token and loads, recomputed in plain Python from the trace: a token
    pays for the distinct parameterized experts it used (ids < 0 are zero-computation or skipped slots)."""
    rt, moe = r.runtime, r.moe
    base = r.params.total - sum(layer.num_experts * layer.params_per_expert for layer in moe.layers)
    per_token: dict[tuple[int, int], int] = {}
    distinct = []
    for layer in trace.layers:
        for ids, step, pos in zip(layer.ids.tolist(), layer.step.tolist(), layer.position.tolist()):
            used = {e for e in ids if e >= 0}
            distinct.append(len(used))
            per_token[(step, pos)] = per_token.get((step, pos), base) + len(used) * layer.params_per_expert
        assert rt.expert_load[trace.layers.index(layer)] == tuple(
            sum(e == x for row in layer.ids.tolist() for e in row) for x in range(layer.num_experts))
    values = list(per_token.values())
    active = rt.active_params_per_token["all"]
    assert (active.total, active.count, active.min, active.max) == (sum(values), len(values), min(values), max(values))
    e = rt.experts_per_token
    assert (e.total, e.count, e.min, e.max) == (sum(distinct), len(distinct), min(distinct), max(distinct))


@pytest.mark.parametrize("model_type", MOE_MODEL_TYPES)
def test_every_moe_architecture_measures_exactly(model_type):
    prompt, new = (PROMPT_LEN, NEW_TOKENS) if model_type in NAMED else (8, 3)
    model = _prepare(tiny_model(model_type))
    with runprof.track(model, trace=True) as t:
        _generate(model, prompt=prompt, new=new)
    r = t.result
    assert r.moe is not None and r.moe.moe_layers >= 1
    assert len(r.runtime.expert_load) == r.moe.moe_layers
    steps = r.runtime.steps
    assert steps[0].phase == "prefill" and steps[0].tokens == prompt
    assert [s.phase for s in steps[1:]] == ["decode"] * (new - 1)
    assert r.runtime.tokens == {"prefill": prompt, "decode": new - 1, "train": 0}
    if model_type in BY_DESIGN:
        _check_against_trace(r, t.trace)
    else:
        _check_exact(r)
        _check_against_trace(r, t.trace)


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


# MoE causal-LM types whose default config turns MoE off (no expert count): found by name, not by config
MOE_OFF_BY_DEFAULT = {
    "dots1": "n_routed_experts is None by default",
    "gemma4": "enable_moe_block=False by default",
    "gemma4_text": "enable_moe_block=False by default",
    "hunyuan_v1_moe": "num_experts=1 by default",
}


def _moe_types_in_transformers() -> set[str]:
    """Causal-LM model types in transformers' own mapping whose default config declares routed experts."""
    import warnings

    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    from transformers.utils import logging as hf_logging

    from runprof.moe.discovery import config_num_experts

    found = set()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for t in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
                try:
                    cfg = AutoConfig.for_model(t)
                except Exception:  # noqa: BLE001 - a composite config that needs arguments
                    continue
                if config_num_experts(cfg) is not None:
                    found.add(t)
    finally:
        hf_logging.set_verbosity(verbosity)
    return found


def test_the_zoo_covers_every_moe_architecture_of_transformers():
    """zoo ∪ exclusions == the MoE causal-LM types transformers declares (plus those with MoE off by default)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    derived = _moe_types_in_transformers() | set(MOE_OFF_BY_DEFAULT)
    assert set(MOE_MODEL_TYPES) | set(NAMED) <= set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    assert set(NAMED) <= set(MOE_MODEL_TYPES) and not set(EXCLUDED) & set(MOE_MODEL_TYPES)
    if transformers.__version__ == "5.23.0":  # the pinned version: exactly these
        assert set(MOE_MODEL_TYPES) | set(EXCLUDED) == derived
    else:  # a newer transformers may add architectures; every one the zoo has must still be there
        assert set(MOE_MODEL_TYPES) <= derived


@pytest.mark.parametrize("model_type", DENSE_MODEL_TYPES)
def test_dense_model_active_equals_total(model_type):
    model = tiny_model(model_type)
    with runprof.track(model) as t:
        model(torch.tensor([[5, 6, 7, 8]]))
    rt = t.result.runtime
    assert t.result.moe is None
    assert rt.active_params_per_token["all"].min == rt.active_params_per_token["all"].max == t.result.params.total
    assert rt.tokens == {"prefill": 4, "decode": 0, "train": 0}


def test_padding_is_not_counted():
    model = tiny_model("mixtral")
    ids = torch.randint(3, 100, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding: 4 pad tokens in row 1
    with runprof.track(model) as t:
        model.generate(ids, attention_mask=mask, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
    rt = t.result.runtime
    assert rt.tokens == {"prefill": 2 * 10 - 4, "decode": 2 * 2, "train": 0}
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
    mismatch = [row for row in t.result.reconcile if row.cause is Cause.CONFIG_K_IGNORED]
    assert len(mismatch) == 1 and mismatch[0].quantity == "active_params_per_token_at_config_k"
    assert mismatch[0].detail == {"k_config": 1, "k_router": 2, "k_measured": 2}
    assert mismatch[0].delta == (2 - 1) * ppe * layers
    before = rt.active_params_per_token["all"].mean

    change = runprof.set_top_k(model, 1)
    assert ("model.layers.0.mlp.gate.top_k", 2, 1) in change
    with runprof.track(model) as t:
        model(ids)
    rt = t.result.runtime
    assert rt.top_k == {"config": 1, "router": 1, "measured": 1}
    assert rt.experts_per_token.max == 1
    # active params drop by exactly (2 − 1) x params per expert x MoE layers
    assert before - rt.active_params_per_token["all"].mean == (2 - 1) * ppe * layers
    all_used = all(x > 0 for load in rt.expert_load for x in load)
    assert [row.cause for row in t.result.reconcile] == [
        Cause.EQUAL, Cause.EQUAL, Cause.ALL_EXPERTS_USED if all_used else Cause.SOME_EXPERTS_UNUSED]
    change.restore()
    assert [layer.top_k for layer in find_moe_layers(model)] == [2, 2] and model.config.num_experts_per_tok == 1


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


def test_distinct_experts_per_step_and_union():
    """experts touched per step and layer, and params touched per step and per run, from the trace by hand."""
    model = tiny_model("mixtral", num_local_experts=8)
    with runprof.track(model, trace=True) as t:
        _generate(model)
    r, trace = t.result, t.trace
    ppe, e = r.moe.params_per_expert, r.moe.num_experts
    base = r.params.total - r.moe.moe_layers * e * ppe
    union_run = [set() for _ in trace.layers]
    for i, step in enumerate(r.runtime.steps):
        touched = []
        for li, layer in enumerate(trace.layers):
            used = {x for row, s in zip(layer.ids.tolist(), layer.step.tolist()) if s == i for x in row}
            union_run[li] |= used
            touched.append(len(used))
        assert step.experts_touched == tuple(touched)
        assert step.params_touched == base + sum(touched) * ppe
    assert all(s.experts_touched == (2, 2) for s in r.runtime.steps[1:])  # batch-1 decode: exactly k
    assert r.runtime.params_touched == base + sum(len(u) for u in union_run) * ppe


class _Recording(torch.overrides.TorchFunctionMode):
    """Records the name of every torch function and tensor method called while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


_SYNCS = {"item", "tolist", "cpu", "numpy", "__bool__", "nonzero", "__index__", "__int__", "__float__",
          "masked_select", "__format__", "__repr__", "synchronize", "to_dense", "__len__"}


@pytest.mark.parametrize("compiled_mode", [False, True])
def test_hooks_and_chunk_reduction_never_sync(compiled_mode):
    """Every torch call made by the step hook, the routing hook and the chunk reduction (incl. the
    finished-row bookkeeping inside generate) is recorded: none reads a value back to the host."""
    from runprof.tracking.capture import Capture, CaptureOptions
    from runprof.tracking.generation import GenerationInfo

    model = tiny_model("mixtral")
    layers = find_moe_layers(model)
    cap = Capture([x.name for x in layers], [torch.device("cpu")] * 2, [8, 8], [10, 10], 2, torch.device("cpu"),
                  100, CaptureOptions(compiled=compiled_mode, chunk_steps=2, trace=True, weights=True))
    steps = StepCollector(cap)
    collectors = [RoutingCollector(x, i, cap, weights=True) for i, x in enumerate(layers)]
    ids, mask = torch.tensor([[1, 2, 3, 4]]), torch.ones(1, 4, dtype=torch.long)
    gen = GenerationInfo(1, 1, 4, None, torch.tensor([2]))
    with _Recording() as rec:
        steps(model, (ids,), {"attention_mask": mask})
        steps.generations[-1] = type(steps.generations[-1])(gen, 1, 4, torch.zeros(1, dtype=torch.bool))
        for c in collectors:
            c.pre_hook(c.layer.experts, (torch.zeros(4, 32), torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]]),
                                         torch.rand(4, 2)), {})
        cache = object()
        for token in (5, 2, 0):  # a live step, the EOS step, a finished row's pad: flushes every 2 steps
            steps(model, (torch.tensor([[token]]),), {"attention_mask": torch.ones(1, 5, dtype=torch.long),
                                                      "past_key_values": cache})
            for c in collectors:
                c.pre_hook(c.layer.experts, (torch.zeros(1, 32), torch.tensor([[1, 6]]), torch.rand(1, 2)), {})
    assert rec.calls and not _SYNCS & set(rec.calls), sorted(_SYNCS & set(rec.calls))
    cap.finish()
    assert int(cap.tokens.sum()) == 4 + 1  # the prompt and the one live decode step; EOS and pad rows are not
    assert int(cap.generated) == 1 and int(cap.finished) == 2  # rows computed after the EOS was fed: 2


@pytest.fixture
def sync_checked_hooks(monkeypatch):
    """Every runprof hook body runs under ``torch.cuda.set_sync_debug_mode("error")`` (a host sync inside one
    raises on CUDA); returns the number of hook calls so far, per kind."""
    calls = {"step": 0, "routing": 0}

    def checked(kind, fn):
        def wrapper(*args, **kwargs):
            calls[kind] += 1
            if not torch.cuda.is_available():  # CPU torch has no sync debug mode: count the calls only
                return fn(*args, **kwargs)
            previous = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("error")
            try:
                return fn(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        return wrapper

    monkeypatch.setattr(StepCollector, "__call__", checked("step", StepCollector.__call__))
    monkeypatch.setattr(RoutingCollector, "pre_hook", checked("routing", RoutingCollector.pre_hook))
    monkeypatch.setattr(RoutingCollector, "post_hook", checked("routing", RoutingCollector.post_hook))
    return calls


def test_hook_bodies_run_in_the_sync_checked_scope(sync_checked_hooks):
    """The scope the CUDA test relies on really wraps the hooks (on CPU the debug mode checks nothing)."""
    model = tiny_model("mixtral")
    with runprof.track(model, modules=False):
        model(torch.randint(3, 100, (1, 6)))
    assert sync_checked_hooks == {"step": 1, "routing": 2}  # one forward, two MoE layers


@pytest.mark.cuda
def test_no_host_sync_on_cuda(sync_checked_hooks):
    """bf16 (torch's CUDA grouped-mm kernel is bf16 only: fp32 falls back with host syncs of its own): the
    hook bodies never sync, and neither does the whole tracked region of a forward."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    model = tiny_model("mixtral").to("cuda", torch.bfloat16)
    ids = torch.randint(3, 100, (1, 16), device="cuda")
    with torch.inference_mode():
        model(ids)  # warm-up outside the checked region
        with runprof.track(model, modules=False) as t:
            torch.cuda.set_sync_debug_mode("error")
            try:
                model(ids)
            finally:
                torch.cuda.set_sync_debug_mode(0)
    assert sync_checked_hooks["routing"] == 2
    assert t.result.runtime.experts_per_token.min == 2


def test_set_top_k_is_transactional():
    """A layer that cannot be written half-way through: the layers already changed are restored."""
    model = tiny_model("mixtral")
    gate = model.model.layers[1].mlp.gate

    class Frozen(type(gate)):
        def __setattr__(self, name, value):
            if name == "top_k":
                raise RuntimeError("read-only router")
            super().__setattr__(name, value)

    gate.__class__ = Frozen
    with pytest.raises(RuntimeError, match="read-only"):
        runprof.set_top_k(model, 1)
    assert [layer.top_k for layer in find_moe_layers(model)] == [2, 2]
    assert model.model.layers[0].mlp.top_k == 2 and model.config.num_experts_per_tok == 2


def test_zaya_skip_slots_use_no_expert():
    """Zaya's router rewrites a 'skip' choice to expert 0 with weight 0: such a slot is no expert."""
    from runprof.moe.builtin import ZayaAdapter

    ids = torch.tensor([[0], [3], [0]])
    weights = torch.tensor([[0.0], [1.0], [1.0]])  # token 0 skipped; token 2 really chose expert 0
    got, _ = ZayaAdapter().from_experts_inputs((torch.zeros(3, 4), ids, weights), {})
    assert got.tolist() == [[-1], [3], [0]]


def test_a_tie_that_is_not_lm_head_keeps_the_input_embedding_out():
    """Only lm_head tied to the input embedding keeps it in ``exclude_input_embedding``: a model whose one tie
    is between two norms (and that reports no output embedding) drops it, statically and as measured."""
    model = tiny_model("mixtral")
    model.get_output_embeddings = lambda: None  # no lm_head as transformers sees it: its group is not lm_head
    model.model.layers[1].input_layernorm.weight = model.model.layers[0].input_layernorm.weight
    with runprof.track(model) as t:
        model(torch.randint(3, 100, (1, 5)))
    p = t.result.params
    assert p.tied and not p.lm_head_tied and p.by_group["lm_head"] == 0
    measured = t.result.runtime.active_params_per_token["exclude_input_embedding"]
    assert measured.min == measured.max == p.active_per_token["exclude_input_embedding"] \
        == p.active_per_token["all"] - p.by_group["embeddings"]
