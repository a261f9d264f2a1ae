"""Bad model input on the run path: one line on stderr and exit 2, never a traceback.

Model folders and configs are built here from tiny configs (no network); the CLI runs in-process.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import MixtralConfig, MixtralForCausalLM, Qwen3MoeConfig, T5Config, ViTConfig

from runprof.cli import main
from runprof.errors import InvalidArgumentError, RunprofError
from runprof.models import checks
from runprof.models.loading import check_buildable, load_model, parse_device
from runprof.models.resolve import check_config, resolve
from runprof.snapshots import CheckpointError
from runprof.static import count_params

from .conftest import REPO

SMALL = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=100, num_local_experts=4, num_experts_per_tok=2)
TOKENIZER = REPO / "runprof" / "models" / "tiny_moe" / "tokenizer.json"


def _one_line(capsys: pytest.CaptureFixture, argv: list[str], expected: str) -> str:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("runprof: error: "), err
    assert "Traceback" not in err and expected in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def prompt(tmp_path: Path) -> str:
    (tmp_path / "p.txt").write_text("hello world\n")
    return str(tmp_path / "p.txt")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Mixtral saved with save_pretrained: config.json and model.safetensors, no tokenizer files."""
    folder = tmp_path_factory.mktemp("model") / "no_tokenizer"
    torch.manual_seed(0)
    MixtralForCausalLM(MixtralConfig(**SMALL)).save_pretrained(folder)
    return folder


# --- item 10: a model folder without tokenizer files -------------------------------------------------
def test_folder_without_tokenizer_names_the_files_and_count(model_dir: Path, prompt: str, capsys) -> None:
    line = _one_line(capsys, [str(model_dir), "--prompt", prompt, "--device", "cpu"], "no tokenizer files")
    assert "tokenizer.json" in line and f"python -m runprof count {model_dir}" in line
    assert main(["count", str(model_dir), "--no-layers"]) == 0  # count needs no tokenizer (nor weights)
    capsys.readouterr()


def test_folder_with_a_broken_tokenizer_is_one_line(model_dir: Path, prompt: str, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "broken_tokenizer"
    shutil.copytree(model_dir, folder)
    (folder / "tokenizer.json").write_text("{not json")
    _one_line(capsys, [str(folder), "--prompt", prompt, "--device", "cpu"], "cannot load its tokenizer")


# --- item 11: a truncated model.safetensors ----------------------------------------------------------
def test_truncated_weights_are_a_corrupt_checkpoint(model_dir: Path, prompt: str, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "truncated"
    shutil.copytree(model_dir, folder)
    shutil.copy(TOKENIZER, folder / "tokenizer.json")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    line = _one_line(capsys, [str(folder), "--prompt", prompt, "--device", "cpu"], "truncated or corrupt")
    assert str(weights) in line
    with pytest.raises(CheckpointError, match="incomplete metadata"):
        load_model(str(folder), device="cpu")


# --- item 12: devices that cannot run a model ----------------------------------------------------------
@pytest.mark.parametrize("device, expected", [
    ("meta", "cannot run on meta"),
    ("hpu", "cannot run on hpu"),
    ("nonsense", "expected cpu, cuda, cuda:N, mps, xpu or auto"),
    ("mps", "no mps device"),
    ("xpu", "no xpu device"),
    ("cuda:99", "cuda"),
])
def test_devices_that_cannot_run_a_model(device: str, expected: str, prompt: str, capsys) -> None:
    if device == "mps" and torch.backends.mps.is_available() or device == "xpu" and getattr(torch, "xpu", None) \
            and torch.xpu.is_available():
        pytest.skip(f"{device} is available here")
    _one_line(capsys, ["--prompt", prompt, "--device", device], expected)


def test_meta_device_refused_through_the_api() -> None:
    with pytest.raises(InvalidArgumentError, match="cannot run on meta"):
        parse_device("meta")
    with pytest.raises(InvalidArgumentError, match="cannot run on meta"):
        load_model(None, device=torch.device("meta"))
    assert parse_device("cpu") == torch.device("cpu")


# --- item 15: an empty reference ----------------------------------------------------------------------
def test_empty_reference_is_not_the_working_directory(prompt: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mixtral", **SMALL}))  # what "" used to find
    for ref in ("", "  "):
        with pytest.raises(InvalidArgumentError, match="empty model reference"):
            resolve(ref)
        with pytest.raises(InvalidArgumentError, match="empty model reference"):
            count_params(ref)
    _one_line(capsys, ["count", ""], "empty model reference")
    _one_line(capsys, ["", "--prompt", prompt], "empty model reference")
    _one_line(capsys, ["compare", "", str(tmp_path / "config.json")], "empty checkpoint reference")


# --- item 9: configs --random-init cannot build or run -----------------------------------------------
def _config(tmp_path: Path, name: str, config: object) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config.to_dict()))
    return str(path)


CONFIGS = {
    "t5": (lambda: T5Config(d_model=32, d_ff=48, num_layers=1, num_heads=2, vocab_size=100), "has no causal-LM class"),
    "vit": (lambda: ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48),
            "has no causal-LM class"),
    # one [10^12, 10^12] float32 projection: 10^24 elements x 4 bytes = 4.00e+24 bytes
    "hidden 10^12": (lambda: MixtralConfig(**{**SMALL, "hidden_size": 10**12}), "would need 4.00e+24 bytes"),
    "top-k 16 of 8": (lambda: MixtralConfig(**{**SMALL, "num_local_experts": 8, "num_experts_per_tok": 16}),
                      "num_experts_per_tok 16 is more than num_local_experts 8"),
    "top-k 0": (lambda: MixtralConfig(**{**SMALL, "num_experts_per_tok": 0}), "num_experts_per_tok 0 is outside"),
    "0 experts": (lambda: MixtralConfig(**{**SMALL, "num_local_experts": 0}), "num_local_experts 0 builds MoE layers"),
    "vocab 0": (lambda: MixtralConfig(**{**SMALL, "vocab_size": 0}), "vocab_size 0"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_init_configs_that_cannot_run(name: str, tmp_path: Path, prompt: str, capsys) -> None:
    build, expected = CONFIGS[name]
    path = _config(tmp_path, name.replace(" ", "_").replace("^", ""), build())
    _one_line(capsys, [path, "--random-init", "--prompt", prompt, "--device", "cpu", "--max-new-tokens", "2"], expected)


def test_weights_larger_than_memory_are_refused_before_allocating(tmp_path: Path, prompt: str, monkeypatch,
                                                                  capsys) -> None:
    path = _config(tmp_path, "small", MixtralConfig(**SMALL))
    monkeypatch.setattr(checks, "available_bytes", lambda dev: 1000)
    line = _one_line(capsys, [path, "--random-init", "--prompt", prompt, "--device", "cpu"], "random weights need")
    assert "which has 1,000 bytes available" in line and "keep fewer layers" in line
    monkeypatch.undo()
    assert main([path, "--random-init", "--prompt", prompt, "--device", "cpu", "--max-new-tokens", "1"]) == 0
    capsys.readouterr()


def test_dense_configs_with_zero_experts_still_build() -> None:
    # Qwen3-MoE with num_experts 0 is a dense model in transformers (no MoE block): not an error
    dense = Qwen3MoeConfig(hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=1,
                           num_attention_heads=4, num_key_value_heads=2, vocab_size=100, num_experts=0)
    check_config(dense, "dense")
    check_buildable(dense, "dense", torch.device("cpu"))


def test_bad_model_end_to_end(model_dir: Path, prompt: str) -> None:
    """Through ``python -m runprof``: the folder without a tokenizer gives one line on stderr and exit 2."""
    proc = subprocess.run([sys.executable, "-m", "runprof", str(model_dir), "--prompt", prompt, "--device", "cpu"],
                          capture_output=True, text=True, timeout=180, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "no tokenizer files" in proc.stderr, proc.stderr
    assert issubclass(CheckpointError, RunprofError)
