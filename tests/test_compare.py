"""Snapshots and checkpoint comparison (issue 6) on checkpoints generated here from a tiny Mixtral.

The fixture saves one tiny Mixtral twice with transformers (``save_pretrained`` writes the per-expert v4
layout, sharded differently each time); every other checkpoint is hand-written with safetensors from its
tensors, with one edit whose expected report is derived in a comment.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from runprof.cli.compare import add_compare
from runprof.errors import InvalidArgumentError, ModelNotFoundError, RunprofError
from runprof.renderers.compare_report import TITLES, render_compare
from runprof.snapshots import CheckpointError, CompareResult, Snapshot, compare, diffing, snapshot

from .conftest import REPO

HIDDEN, INTER, VOCAB, EXPERTS = 32, 48, 100, 4
Q = "model.layers.0.self_attn.q_proj.weight"
EMBED = "model.embed_tokens.weight"
NORM = "model.norm.weight"
DROPPED = "model.layers.1.post_attention_layernorm.weight"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Paths and tensors: ``ref`` (4 shards) and ``resharded`` (2 shards) hold the same v4 tensors."""
    from transformers import MixtralConfig, MixtralForCausalLM

    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    config = MixtralConfig(hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=VOCAB, num_local_experts=EXPERTS)
    model = MixtralForCausalLM(config).eval()
    with torch.no_grad():
        model.get_parameter(Q)[3, 5] = 0.5  # a known value for the changed-element test
    model.save_pretrained(root / "ref", max_shard_size="60KB")
    model.save_pretrained(root / "resharded", max_shard_size="120KB")
    v4: dict[str, torch.Tensor] = {}
    for shard in sorted((root / "ref").glob("*.safetensors")):
        v4.update(load_file(shard))
    fused = {k: v.clone() for k, v in model.state_dict().items()}
    return {"root": root, "ref": root / "ref", "resharded": root / "resharded", "v4": v4, "fused": fused,
            "model": model}


def _write(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def _edited(ckpt: dict, name: str, **edits) -> Path:
    """The v4 tensors as one file, with ``drop``, ``replace`` (name -> tensor) and ``prefix`` edits."""
    tensors = {k: v.clone() for k, v in ckpt["v4"].items() if k not in edits.get("drop", ())}
    tensors.update(edits.get("replace", {}))
    prefix = edits.get("prefix", "")
    return _write(ckpt["root"] / name, {prefix + k: v for k, v in tensors.items()})


def _cli(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    add_compare(parser.add_subparsers())
    args = parser.parse_args(["compare", *map(str, argv)])
    code = args.func(args)
    return code, capsys.readouterr().out


def _section(out: str, key: str) -> list[str]:
    """The names listed under a section title of the text report."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(TITLES[key] + " ("))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        if not line.startswith(("name", "----", "  ")):
            rows.append(line.split()[0])
    return rows


# --- the acceptance bullets, through the command's run function ---------------------------------

def test_identical_copies_sharded_differently(ckpt, capsys):
    # ref has 4 shards and resharded 2: the same 41 v4 tensors, so nothing differs
    code, out = _cli(capsys, ckpt["ref"], ckpt["resharded"])
    assert code == 0
    assert out.rstrip().endswith("result: identical (0 differences)")
    for key in TITLES:
        assert _section(out, key) == []
    bin_dir = ckpt["root"] / "bin"  # the same tensors as a PyTorch pickle
    bin_dir.mkdir(exist_ok=True)
    torch.save(ckpt["v4"], bin_dir / "pytorch_model.bin")
    assert compare(ckpt["ref"], bin_dir).identical


def test_prefix_resolved_with_base_prefix(ckpt, capsys):
    prefixed = _edited(ckpt, "prefixed.safetensors", prefix="transformer.")
    code, out = _cli(capsys, prefixed, ckpt["ref"])
    assert code == 1  # 41 names only in base, 41 only in target
    assert len(_section(out, "only_in_base")) == len(_section(out, "only_in_target")) == 41
    assert "try --base-prefix transformer." in out
    code, out = _cli(capsys, prefixed, ckpt["ref"], "--base-prefix", "transformer.")
    assert code == 0


def test_missing_tensor(ckpt, capsys):
    target = _edited(ckpt, "missing.safetensors", drop=[DROPPED])
    code, out = _cli(capsys, ckpt["ref"], target)
    assert code == 1
    assert _section(out, "only_in_base") == [DROPPED]
    assert _section(out, "only_in_target") == []


def test_vocab_padded_embedding(ckpt, capsys):
    padded = torch.cat([ckpt["v4"][EMBED], torch.zeros(128 - VOCAB, HIDDEN)])  # 100 -> 128 rows
    target = _edited(ckpt, "padded.safetensors", replace={EMBED: padded})
    code, out = _cli(capsys, ckpt["ref"], target)
    assert code == 1
    assert _section(out, "shape_mismatch") == [EMBED]
    assert re.search(r"\[100, 32\]\s+\[128, 32\]", out)
    entry = compare(ckpt["ref"], target).shape_mismatch[0]
    assert (entry.base_shape, entry.target_shape) == ((100, 32), (128, 32))


def test_single_changed_element(ckpt, capsys):
    q = ckpt["v4"][Q].clone()
    q[3, 5] = 0.75  # the fixture set 0.5: |0.75 - 0.5| = 0.25, in 1 of 32 * 32 = 1,024 elements
    target = _edited(ckpt, "changed.safetensors", replace={Q: q})
    code, out = _cli(capsys, ckpt["ref"], target)
    assert code == 1
    assert _section(out, "value_mismatch") == [Q]
    assert re.search(r"float32\s+0\.25\s+1 of 1,024", out)
    (entry,) = compare(ckpt["ref"], target).value_mismatch
    assert (entry.max_abs_diff, entry.differing_elements) == (0.25, 1)
    assert compare(ckpt["ref"], target, atol=0.25).identical  # 0.25 <= atol + 0 * |0.5|
    assert not compare(ckpt["ref"], target, atol=0.2).identical
    assert compare(ckpt["ref"], target, rtol=0.5).identical  # 0.25 <= 0.5 * |0.5|


def test_dtype_change(ckpt, capsys):
    # RMSNorm weights start at 1.0, exact in float16: a dtype difference with max abs diff 0
    target = _edited(ckpt, "fp16norm.safetensors", replace={NORM: ckpt["v4"][NORM].half()})
    code, out = _cli(capsys, ckpt["ref"], target)
    assert code == 1
    assert _section(out, "dtype_mismatch") == [NORM]
    (entry,) = compare(ckpt["ref"], target).dtype_mismatch
    assert (entry.base_dtype, entry.target_dtype, entry.max_abs_diff, entry.differing_elements) == (
        "float32", "float16", 0.0, 0)


def test_json_written_and_round_trips(ckpt, capsys, tmp_path):
    target = _edited(ckpt, "missing2.safetensors", drop=[DROPPED])
    code, _ = _cli(capsys, ckpt["ref"], target, "--json", tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert code == 1 and data["kind"] == "compare" and data["identical"] is False
    assert [e["name"] for e in data["only_in_base"]] == [DROPPED]
    assert data["totals"]["base_tensors"] == 41 and data["totals"]["target_tensors"] == 40
    assert CompareResult.from_dict(data) == compare(ckpt["ref"], target)
    # every section filled (and a fused expert entry): from_dict(to_dict(r)) == r, rendered the same
    padded = torch.cat([ckpt["v4"][EMBED], torch.zeros(28, HIDDEN)])
    edited = {**ckpt["fused"], "model.layers.0.mlp.experts.down_proj": ckpt["fused"]["model.layers.0.mlp.experts.down_proj"] + 1}
    edited = {k: v for k, v in edited.items() if k != DROPPED}
    edited.update({EMBED: padded, NORM: ckpt["fused"][NORM].half(), "extra.weight": torch.ones(2)})
    r = compare(ckpt["ref"], edited, fuse_experts=True)
    assert all(getattr(r, s) for s in ("only_in_base", "only_in_target", "shape_mismatch", "dtype_mismatch"))
    assert len(r.value_mismatch[0].experts) == EXPERTS
    again = CompareResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r and render_compare(again) == render_compare(r)


# --- corrupt input: one line, nothing written ----------------------------------------------------

def _corrupt_inputs(ckpt: dict) -> dict[str, tuple[Path, str]]:
    root = ckpt["root"]
    shard = sorted(ckpt["ref"].glob("*.safetensors"))[0]
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(shard.read_bytes()[:-100])
    incomplete = root / "incomplete"
    if not incomplete.exists():
        shutil.copytree(ckpt["ref"], incomplete)
        (incomplete / shard.name).unlink()
    pickle = root / "truncated.bin"
    torch.save({"w": torch.ones(1000)}, pickle)
    pickle.write_bytes(pickle.read_bytes()[:-2000])
    notes = root / "notes.txt"
    notes.write_text("not a checkpoint\n")
    (root / "empty").mkdir(exist_ok=True)
    return {
        "truncated": (truncated, "truncated or corrupt safetensors file"),
        "missing shard": (incomplete, f"names shard {shard.name}"),
        "truncated .bin": (pickle, "cannot read as a PyTorch checkpoint"),
        "not a checkpoint (file)": (notes, "not a checkpoint"),
        "not a checkpoint (dir)": (root / "empty", "not a checkpoint"),
        "missing path": (root / "nowhere", "no such file or directory"),
    }


def test_corrupt_input_one_line_nothing_written(ckpt, capsys, tmp_path):
    for case, (path, expected) in _corrupt_inputs(ckpt).items():
        for argv in ((path, ckpt["ref"]), (ckpt["ref"], path)):
            with pytest.raises(RunprofError) as info:
                _cli(capsys, *argv, "--json", tmp_path / "out.json")
            message = str(info.value)
            assert expected in message and str(path) in message, case
            assert "\n" not in message, case
            assert not (tmp_path / "out.json").exists()
    assert isinstance(info.value, ModelNotFoundError)


def test_bad_options(ckpt):
    with pytest.raises(InvalidArgumentError, match="rtol=-1"):
        compare(ckpt["ref"], ckpt["ref"], rtol=-1)
    with pytest.raises(InvalidArgumentError, match="not a regular expression"):
        compare(ckpt["ref"], ckpt["ref"], ignore="(")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgumentError, match="CUDA is not available"):
            compare(ckpt["ref"], ckpt["ref"], device="cuda")
    with pytest.raises(CheckpointError, match="truncated"):
        compare(_corrupt_inputs(ckpt)["truncated"][0], ckpt["ref"])


# --- snapshots -----------------------------------------------------------------------------------

def test_snapshot_compare_self_is_empty_and_round_trips(ckpt):
    s = snapshot(ckpt["model"])
    assert len(s) == 21  # 1 embedding + 2 layers x 9 + final norm + lm_head
    r = compare(s, s)
    assert r.identical and r.differences == 0 and r.totals.equal == 21
    assert Snapshot.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert compare(s, ckpt["model"]).identical  # a snapshot against the live model: digests on both sides


def test_snapshot_of_identical_models_and_one_changed_element(ckpt):
    a = {k: v.clone() for k, v in ckpt["fused"].items()}
    b = {k: v.clone() for k, v in ckpt["fused"].items()}
    assert compare(snapshot(a), snapshot(b)).identical
    b["model.norm.weight"][7] = 1.0 + 2.0**-23  # one ulp: one element, one changed word
    r = compare(snapshot(a), snapshot(b))
    (entry,) = r.value_mismatch
    assert entry.name == NORM and entry.max_abs_diff is None and entry.differing_elements is None
    full = compare(a, b).value_mismatch[0]  # with both values at hand: the diff and the count
    assert (full.max_abs_diff, full.differing_elements) == (2.0**-23, 1)
    x = torch.arange(1000, dtype=torch.float32)
    swapped = x.clone()
    swapped[[10, 20]] = swapped[[20, 10]]  # same multiset of words: d0 equal, position-weighted sums differ
    flipped = x.clone().view(torch.int32)
    flipped[999] ^= 1  # lowest mantissa bit
    digests = {snapshot({"t": t}).tensors["t"].digest for t in (x, swapped, flipped.view(torch.float32))}
    assert len(digests) == 3
    assert snapshot({"t": x.half()}).tensors["t"].digest != snapshot({"t": x}).tensors["t"].digest




# --- recomputable buffers, tied weights, ignore --------------------------------------------------

def test_recomputable_and_tied_are_not_differences(ckpt, tmp_path):
    base = {k: v for k, v in ckpt["v4"].items() if k != "lm_head.weight"}
    base["model.rotary_emb.inv_freq"] = torch.ones(4)
    tied = dict(ckpt["v4"], **{"lm_head.weight": ckpt["v4"][EMBED].clone()})
    r = compare(_write(tmp_path / "b.safetensors", base), _write(tmp_path / "t.safetensors", tied))
    assert r.identical
    assert {(s.name, s.side) for s in r.recomputable} == {("model.rotary_emb.inv_freq", "base"),
                                                          ("lm_head.weight", "target")}
    untied = compare(base, ckpt["v4"])  # the fixture's lm_head is not the embedding: a real difference
    assert [e.name for e in untied.only_in_target] == ["lm_head.weight"]


def test_ignore_regex(ckpt, tmp_path):
    target = _edited(ckpt, "fp16norm2.safetensors", replace={NORM: ckpt["v4"][NORM].half()}, drop=[DROPPED])
    r = compare(ckpt["ref"], target, ignore=r"norm\.weight$|post_attention_layernorm")
    assert r.identical
    assert {s.name for s in r.ignored} == {NORM, DROPPED, "model.layers.0.post_attention_layernorm.weight",
                                           "model.layers.0.input_layernorm.weight",
                                           "model.layers.1.input_layernorm.weight"}


# --- fused MoE experts ---------------------------------------------------------------------------

def test_fuse_experts_matches_transformers_layout(ckpt, capsys):
    # transformers wrote ref in v4 layout from the fused model: the mapping must give the model back
    assert compare(ckpt["model"], ckpt["ref"], fuse_experts=True).identical
    fused = _write(ckpt["root"] / "fused.safetensors", ckpt["fused"])
    code, out = _cli(capsys, ckpt["ref"], fused)
    assert code == 1 and "try --fuse-experts" in out
    code, out = _cli(capsys, ckpt["ref"], fused, "--fuse-experts")
    assert code == 0


def test_fused_expert_mismatch_names_the_expert(ckpt, capsys):
    edited = {k: v.clone() for k, v in ckpt["fused"].items()}
    edited["model.layers.0.mlp.experts.gate_up_proj"][3, INTER + 1, 2] += 1.0  # expert 3, its up half (w3)
    edited["model.layers.1.mlp.experts.down_proj"][1, 0, 0] += 1.0  # expert 1 (w2)
    target = _write(ckpt["root"] / "fused_edit.safetensors", edited)
    code, out = _cli(capsys, ckpt["ref"], target, "--fuse-experts")
    assert code == 1
    assert _section(out, "value_mismatch") == ["model.layers.0.mlp.experts.gate_up_proj[3]",
                                               "model.layers.1.mlp.experts.down_proj[1]"]
    r = compare(ckpt["ref"], target, fuse_experts=True)
    assert [(e.index, e.differing_elements) for e in r.value_mismatch[0].experts] == [(3, 1)]
    assert r.value_mismatch[0].differing_elements == 1


def test_windows_smaller_than_tensors(ckpt, monkeypatch):
    # 256-byte windows: gate_up_proj (4 x 96 x 32 x 4 B = 48 KiB) is read in 192 windows on each side
    monkeypatch.setattr(diffing, "WINDOW_BYTES", 256)
    edited = {k: v.clone() for k, v in ckpt["fused"].items()}
    edited["model.layers.0.mlp.experts.gate_up_proj"][2, 95, 31] = 9.0  # the last element of expert 2
    r = compare(ckpt["ref"], edited, fuse_experts=True)
    (entry,) = r.value_mismatch
    assert [e.index for e in entry.experts] == [2] and entry.differing_elements == 1
    assert r.totals.compared_bytes == 2 * r.totals.base_bytes  # every byte read once on each side


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compare_on_cuda(ckpt):
    q = ckpt["v4"][Q].clone()
    q[3, 5] = 0.75
    r = compare(ckpt["ref"], {**ckpt["v4"], Q: q}, device="cuda")
    assert r.value_mismatch[0].max_abs_diff == 0.25
    assert compare(snapshot(ckpt["model"].cuda()), snapshot(ckpt["model"].cpu())).identical


# --- end to end: python -m runprof compare -----------------------------------------------------

def _start(*argv: object) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "runprof", "compare", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def test_cli_end_to_end(ckpt, tmp_path):
    q = ckpt["v4"][Q].clone()
    q[3, 5] = 0.75
    target = _edited(ckpt, "e2e.safetensors", drop=[DROPPED], replace={Q: q, NORM: ckpt["v4"][NORM].half()})
    truncated = _corrupt_inputs(ckpt)["truncated"][0]
    # both processes at once: each spends most of its time importing torch
    diff = _start(ckpt["ref"], target, "--json", tmp_path / "r.json")
    bad = _start(truncated, ckpt["ref"], "--json", tmp_path / "bad.json")
    out, err = diff.communicate(timeout=180)
    assert diff.returncode == 1, err
    assert _section(out, "only_in_base") == [DROPPED]
    assert _section(out, "dtype_mismatch") == [NORM]
    assert _section(out, "value_mismatch") == [Q]
    assert json.loads((tmp_path / "r.json").read_text())["differences"] == 3
    out, err = bad.communicate(timeout=180)
    assert bad.returncode == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("runprof: error: ") and "truncated" in err
    assert not (tmp_path / "bad.json").exists()
