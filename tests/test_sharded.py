"""Models dispatched by accelerate (device maps with CPU and disk offload): tracking measures exactly what the
unsplit model measures, leaves accelerate's hooks in place and working, and reports where the weights live."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from accelerate import cpu_offload, dispatch_model, infer_auto_device_map
from torch import nn

import runprof
from runprof.results import TrackResult

from .moe_zoo import tiny_model

PROMPT_LEN, NEW_TOKENS = 8, 4
# Both MoE layers of the tiny Mixtral on different places, so their routing is captured on each one.
SPLIT_MAP = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.norm": "cpu",
             "model.rotary_emb": "cpu", "lm_head": "disk"}


def _generate(model: nn.Module) -> torch.Tensor:
    ids = torch.randint(3, 120, (2, PROMPT_LEN), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                              min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)


def _tracked(model: nn.Module, **options: Any) -> tuple[torch.Tensor, TrackResult]:
    with runprof.track(model, **options) as t:
        out = _generate(model)
    return out, t.result


def _accelerate_hooks(model: nn.Module) -> dict[str, int]:
    return {name: id(m._hf_hook) for name, m in model.named_modules() if hasattr(m, "_hf_hook")}


def _dispatch(how: str, tmp_path: Any) -> nn.Module:
    model = tiny_model("mixtral")
    if how == "cpu_offload":
        return cpu_offload(model, execution_device=torch.device("cpu"))
    if how == "inferred":  # 250 kB of "cpu": the embedding fits, the decoder layers and lm_head go to disk
        device_map = infer_auto_device_map(model, max_memory={"cpu": 250_000},
                                           no_split_module_classes=model._no_split_modules)
    else:
        device_map = SPLIT_MAP
    return dispatch_model(model, device_map=device_map, offload_dir=str(tmp_path / "offload"))


@pytest.mark.parametrize("how", ["split", "inferred", "cpu_offload"])
def test_dispatched_model_measures_what_the_unsplit_model_measures(how: str, tmp_path: Any) -> None:
    ref_out, ref = _tracked(tiny_model("mixtral"), memory=False)
    model = _dispatch(how, tmp_path)
    hooks = _accelerate_hooks(model)
    assert hooks, "accelerate installed no hooks"
    out, r = _tracked(model)  # memory ledger on: it must cope with meta (offloaded) parameters
    assert torch.equal(out, ref_out)
    rt, rrt = r.runtime, ref.runtime
    assert rt.expert_load == rrt.expert_load
    assert sum(rt.expert_load[0]) == 2 * (PROMPT_LEN + NEW_TOKENS - 1) * 2  # batch x tokens x k
    assert rt.active_params_per_token == rrt.active_params_per_token
    assert rt.active_params_per_token_by_phase == rrt.active_params_per_token_by_phase
    assert rt.experts_per_token == rrt.experts_per_token
    assert (rt.tokens, rt.params_touched, rt.stats()) == (rrt.tokens, rrt.params_touched, rrt.stats())
    assert r.params == ref.params and r.moe == ref.moe and r.reconcile == ref.reconcile
    # accelerate's hooks are the same objects, and still do their job
    assert _accelerate_hooks(model) == hooks
    assert torch.equal(_generate(model), ref_out)


def test_placement_reports_offloaded_weights(tmp_path: Any) -> None:
    _, ref = _tracked(tiny_model("mixtral"), memory=False)
    assert "placement" not in ref.extra  # one device, no device map: nothing to say
    model = _dispatch("split", tmp_path)
    _, r = _tracked(model, memory=False)
    where = r.extra["placement"]
    assert set(where) == {"cpu", "disk"}
    assert sum(where.values()) == r.bytes.total  # every parameter byte is somewhere
    per_layer = sum(p.numel() * 4 for p in tiny_model("mixtral").model.layers[1].parameters())  # fp32
    lm_head = 64 * 128 * 4  # hidden 64 x vocab 128, fp32
    assert where["disk"] == per_layer + lm_head
    assert TrackResult.from_dict(r.to_dict()) == r
    _, r = _tracked(_dispatch("cpu_offload", tmp_path), memory=False)
    assert r.extra["placement"] == {"meta": r.bytes.total}  # not resident: loaded from the CPU at each forward


def test_exception_in_a_dispatched_region_unhooks_only_runprof(tmp_path: Any) -> None:
    ref_out = _generate(tiny_model("mixtral"))
    model = _dispatch("split", tmp_path)
    hooks = _accelerate_hooks(model)
    with pytest.raises(RuntimeError, match="boom"), runprof.track(model, memory=False):
        _generate(model)
        raise RuntimeError("boom")
    assert not runprof.tracking.is_tracked(model)
    assert _accelerate_hooks(model) == hooks
    assert torch.equal(_generate(model), ref_out)


def test_memory_ledger_counts_offloaded_weights_apart(tmp_path: Any) -> None:
    """Weights accelerate offloaded to disk (parameters on meta) are not resident: the ledger's ``weights`` row
    has only what sits in memory, ``weights_offloaded`` the rest, and together they are the static bytes."""
    model = _dispatch("split", tmp_path)
    _, r = _tracked(model)
    rows = {row.name: row for row in r.memory.rows}
    where = r.extra["placement"]
    assert rows["weights"].bytes == where["cpu"]
    assert rows["weights_offloaded"].bytes == where["disk"]
    assert rows["weights"].bytes + rows["weights_offloaded"].bytes == r.bytes.total
    assert rows["weights_offloaded"].detail == {"places": {"meta": where["disk"]}, "meta": True}
