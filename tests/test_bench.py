"""``runprof.routing.bench`` and ``python -m runprof bench`` on the shipped tiny MoE (Mixtral, 8 experts,
top-2, 4 MoE layers): exact experts and active params per k, k restored, JSON shape, PNGs, errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runprof.cli import main
from runprof.models.loading import load_model
from runprof.models.resolve import TINY_MOE_DIR
from runprof.moe import find_moe_layers
from runprof.routing.bench import BenchResult, bench

from .conftest import REPO

PROMPT = ("def top_words(path, n=10):\n    with open(path) as f:\n"
          "        return Counter(f.read().split()).most_common(n)\n")
KS = (1, 2, 4)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: on a shared 2-core machine two threads oversubscribe and run >10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shipped(one_thread):
    loaded = load_model(None, device="cpu")
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logits_before = loaded.model(ids).logits
    return loaded, ids, logits_before


@pytest.fixture(scope="module")
def result(shipped) -> BenchResult:
    loaded, ids, _ = shipped
    return bench(loaded.model, ids, top_ks=KS, batch_sizes=(1, 3), repeats=2, warmup=1, max_new_tokens=4,
                 pad_token_id=loaded.tokenizer.pad_token_id, name="tiny-moe")


def test_exact_experts_and_active_params_and_k_restored(result, shipped):
    loaded = shipped[0]
    ppe = find_moe_layers(loaded.model)[0].params_per_expert
    layers = len(find_moe_layers(loaded.model))
    assert [(r.top_k, r.batch_size) for r in result.runs] == [(k, b) for k in KS for b in (1, 3)]
    static = {}
    for run in result.runs:
        k = run.top_k
        assert run.top_k_measured == k
        assert (run.experts_per_token.min, run.experts_per_token.max, run.experts_per_token.mean) == (k, k, k)
        a = run.active_params_per_token
        assert a.min == a.max == a.mean == run.static_active_params_per_token
        static[k] = run.static_active_params_per_token
        # 4 MoE layers; prefill = B x prompt, decode = B x (4 - 1) tokens
        assert run.tokens == {"prefill": run.batch_size * result.prompt_tokens, "decode": run.batch_size * 3}
    # each extra expert per token adds one expert in each of the 4 layers: (k - 1) x 4 x params per expert
    assert all(static[k] - static[1] == (k - 1) * layers * ppe for k in KS)
    assert static[2] == loaded.model.num_parameters() - layers * (8 - 2) * ppe  # tied head counted once

    # the original k is restored: routers, blocks, config, and the model computes what it did before
    ids, logits_before = shipped[1], shipped[2]
    assert result.top_k_original == 2 and result.top_k_restored
    for layer in find_moe_layers(loaded.model):
        assert layer.top_k == 2 and layer.block.top_k == 2
    assert loaded.model.config.num_experts_per_tok == 2
    with torch.inference_mode():
        assert torch.equal(loaded.model(ids).logits, logits_before)


def test_k_restored_when_generate_fails(shipped, monkeypatch):
    model = shipped[0].model

    def boom(*args, **kwargs):
        raise RuntimeError("generate failed")

    monkeypatch.setattr(model, "generate", boom)
    with pytest.raises(RuntimeError, match="generate failed"):
        bench(model, shipped[1], top_ks=[4], repeats=1, warmup=0, max_new_tokens=2)
    assert [layer.top_k for layer in find_moe_layers(model)] == [2] * 4
    assert model.config.num_experts_per_tok == 2


def test_json_shape_and_round_trip(result):
    d = json.loads(json.dumps(result.to_dict()))
    assert {"model", "runs"} <= set(d) and {"name", "class", "model_type", "dtype", "device"} <= set(d["model"])
    for run in d["runs"]:
        assert {"top_k", "batch_size", "experts_per_token", "active_params_per_token", "prefill_tokens_per_s",
                "decode_tokens_per_s", "mean_logprob", "routing"} <= set(run)
        assert set(run["experts_per_token"]) == set(run["active_params_per_token"]) == {"min", "max", "mean", "total",
                                                                                        "count"}
        assert set(run["prefill_tokens_per_s"]) == set(run["decode_tokens_per_s"]) == {"median", "min", "max"}
        assert run["prefill_tokens_per_s"]["min"] <= run["prefill_tokens_per_s"]["median"] > 0
        assert [x["name"] for x in run["routing"]] == [f"model.layers.{i}.mlp" for i in range(4)]  # records
        layer = run["routing"][0]
        assert sum(layer["load"]) == run["top_k"] * (run["tokens"]["prefill"] + run["tokens"]["decode"])
        assert layer["first_choice_random"] == 1 / 8
        assert layer["router_on_prompt"]["top_k"] == run["top_k"]
    assert d["runs"][2]["routing"][0]["any_overlap_random"] == pytest.approx(13 / 28)
    assert BenchResult.from_dict(d) == result


def test_mean_logprob_is_the_causal_lm_loss(result, shipped):
    loaded, ids, _ = shipped
    with torch.inference_mode():
        loss = loaded.model(ids, labels=ids, output_router_logits=False).loss  # no aux loss added
    assert result.reference.mean_logprob == pytest.approx(-float(loss), abs=1e-4)
    assert result.reference.predicted_tokens == ids.shape[1] - 1
    own = [r.score.mean_logprob for r in result.runs if r.top_k == 2]
    assert own == [result.reference.mean_logprob] * 2


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompt.txt"
    path.write_text(PROMPT, encoding="utf-8")
    return path


def test_cli_json_and_plots(prompt_file, tmp_path, capsys, one_thread):
    import matplotlib.image
    from PIL import Image

    out = tmp_path / "bench.json"
    rc = main(["bench", "--prompt", str(prompt_file), "--top-k", "1,2,4", "--repeats", "1", "--warmup", "0",
                  "--max-new-tokens", "3", "--threads", "1", "--json", str(out), "--plot", str(tmp_path / "png"),
                "--full"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = json.loads(out.read_text())
    assert main(["render", str(out), "--full"]) == 0
    assert capsys.readouterr().out == captured.out  # the report is the saved result's
    assert [(r["top_k"], r["experts_per_token"]["min"], r["experts_per_token"]["max"]) for r in data["runs"]] == \
        [(1, 1, 1), (2, 2, 2), (4, 4, 4)]
    # three panels of 4 x 3.2 in at 100 dpi: 1200 x 320 px; the throughput figure is 10 x 3.6 in: 1000 x 360
    sizes = {"expert_load.png": (1200, 320), "repeat_rates.png": (1200, 320), "throughput.png": (1000, 360)}
    for name, size in sizes.items():
        path = tmp_path / "png" / name
        assert path.stat().st_size > 10_000
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == size
        assert matplotlib.image.imread(path).shape[:2] == size[::-1]


def test_cli_errors_are_one_line(prompt_file, tmp_path, capsys, monkeypatch, one_thread):
    cases = {
        "0": "--top-k 0: expected an integer 1..8",
        "9": "--top-k 9: expected an integer 1..8",
        "a,2": "--top-k 'a,2': expected comma-separated integers",
        "1,1": "a value is repeated",
    }
    for value, message in cases.items():
        assert main(["bench", "--prompt", str(prompt_file), "--top-k", value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1] and err[-1].startswith("runprof: error: ")
    # a dense model: one clear line
    from .moe_zoo import tiny_model

    dense = tmp_path / "dense"
    tiny_model("llama").save_pretrained(dense)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_MOE_DIR / name, dense / name)
    assert main(["bench", str(dense), "--prompt", str(prompt_file), "--top-k", "1,2"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("runprof:")]
    assert len(err) == 1 and "not a mixture-of-experts model" in err[0]
    # --plot without matplotlib: says how to install it, before loading anything
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["bench", "--prompt", str(prompt_file), "--top-k", "1", "--plot", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install runprof[plot]" in err[0]
    assert not (tmp_path / "p").exists()


def test_python_m_runprof_bench(prompt_file, tmp_path):
    out = tmp_path / "b.json"
    proc = subprocess.run(
        [sys.executable, "-m", "runprof", "bench", "--prompt", str(prompt_file), "--top-k", "1,2", "--repeats", "1",
         "--warmup", "0", "--max-new-tokens", "2", "--threads", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["experts_per_token"]["max"] for r in json.loads(out.read_text())["runs"]] == [1, 2]
