"""The main job on the shipped tiny MoE, its routing, and bad input on the command line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

import runprof
from runprof.cli import main
from runprof.models.loading import load_model

from .conftest import REPO

PROMPT = str(REPO / "examples" / "prompt.txt")
CONTRACT = {"schema", "model", "params", "moe", "bytes", "runtime", "reconcile", "memory"}


@pytest.fixture(scope="module")
def shipped():
    return load_model(None, device="cpu")


def test_default_model_offline_under_30_s(tmp_path):
    out = tmp_path / "run.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "runprof", "--prompt", PROMPT, "--json", str(out)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 30, f"took {elapsed:.1f} s"
    d = json.loads(out.read_text())
    assert CONTRACT <= set(d)
    rt = d["runtime"]
    assert rt["active_params_per_token"]["min"] == rt["active_params_per_token"]["max"] == \
        d["params"]["active_per_token"]["all"]
    rows = 4 * (rt["tokens"]["prefill"] + rt["tokens"]["decode"])  # every token, in each of the 4 MoE layers
    assert rt["experts_per_token"] == {"mean": 2.0, "min": 2, "max": 2, "total": 2 * rows, "count": rows}
    text = " ".join(proc.stdout.split())  # the report wraps to the terminal's width
    assert "generated (first line)" in text
    assert "verdict: measured = static; each token used exactly k = 2 experts per MoE layer" in text


def test_top_k_1_on_default_model(capsys, tmp_path):
    out = tmp_path / "k1.json"
    assert main(["--prompt", PROMPT, "--max-new-tokens", "4", "--top-k", "1", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    rows = 4 * sum(d["runtime"]["tokens"].values())
    assert d["runtime"]["experts_per_token"] == {"mean": 1.0, "min": 1, "max": 1, "total": rows, "count": rows}
    assert d["runtime"]["top_k"] == {"config": 1, "router": 1, "measured": 1}
    ppe, layers = d["moe"]["params_per_expert"], d["moe"]["moe_layers"]
    static_k2 = d["params"]["total"] - layers * (d["moe"]["num_experts"] - 2) * ppe
    assert d["runtime"]["active_params_per_token"]["mean"] == static_k2 - layers * ppe


def test_config_only_change_is_reported(capsys):
    assert main(["--prompt", PROMPT, "--max-new-tokens", "2", "--config-top-k", "1", "--threads", "1"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # the summary's line for the reconcile row, wrapped
    assert "MISMATCH: config.num_experts_per_tok=1 but the routers hold k=2 and measured k=2" in text


def test_real_mixtral_layer_random_init(capsys, tmp_path):
    """One real-shaped Mixtral-8x7B layer (1.6B params, bf16) with random weights and the shipped tokenizer."""
    out = tmp_path / "mx.json"
    args = ["mixtral", "--random-init", "--num-layers", "1", "--max-new-tokens", "4", "--dtype", "bf16",
            "--prompt", PROMPT, "--json", str(out)]
    assert main(args) == 0
    d = json.loads(out.read_text())
    # one layer of Mixtral-8x7B: embeddings 131,072,000 + lm_head 131,072,000 + attention 41,943,040
    # (q,o 4096² + k,v 1024x4096) + router 32,768 + experts 8 x 176,160,768 + norms 2x4096 + final 4096
    assert d["params"]["total"] == 131_072_000 * 2 + 41_943_040 + 32_768 + 8 * 176_160_768 + 3 * 4096
    assert d["runtime"]["active_params_per_token"]["min"] == d["runtime"]["active_params_per_token"]["max"] \
        == d["params"]["active_per_token"]["all"] == d["params"]["total"] - 6 * 176_160_768
    assert "shipped tokenizer" in " ".join(capsys.readouterr().out.split())


def test_shipped_routing_is_not_random(shipped):
    """First-choice repeat rate on examples/prompt.txt beats the random 1/E by >= 5 points in some layer."""
    model, tok = shipped.model, shipped.tokenizer
    ids = tok(open(PROMPT, encoding="utf-8").read(), return_tensors="pt")["input_ids"]
    with torch.inference_mode(), runprof.track(model, trace=True, weights=True) as t:
        model(ids)
    e = t.result.moe.num_experts
    rates = []
    for calls in t.trace.layers:
        w = calls.weights
        first = calls.ids.gather(1, w.argmax(1, keepdim=True)).squeeze(1)  # highest-weight expert per token
        rates.append(float((first[1:] == first[:-1]).double().mean()))
    assert max(rates) >= 1 / e + 0.05, rates


def test_shipped_model_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in (REPO / "runprof" / "models" / "tiny_moe").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert sum(files.values()) < 8 * 2**20


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "MISSING"], "no such file"),
        (["--prompt", "EMPTY"], "empty"),
        (["--prompt", "LONG", "--max-new-tokens", "8"], "past the model's context"),
        (["unknown-alias", "--prompt", PROMPT], "not a known alias"),
        (["--prompt", PROMPT, "--top-k", "0"], "--top-k 0"),
        (["--prompt", PROMPT, "--top-k", "99"], "out of range"),
        (["mixtral", "--prompt", PROMPT], "not in the local Hugging Face cache"),
        (["--prompt", PROMPT, "--num-layers", "1"], "--num-layers needs --random-init"),
        (["--prompt", PROMPT, "--threads", "0"], "--threads 0"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "long.txt").write_text("word " * 5000)
    subst = {"MISSING": str(tmp_path / "nope.txt"), "EMPTY": str(tmp_path / "empty.txt"),
             "LONG": str(tmp_path / "long.txt")}
    assert main([subst.get(a, a) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_cuda_without_gpu_is_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["--prompt", PROMPT, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU" in err[0]


