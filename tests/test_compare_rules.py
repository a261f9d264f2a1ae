"""One equality rule for every input (bitwise unless a tolerance is given) and the three verdicts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from runprof.cli import main
from runprof.errors import InvalidArgumentError, ModelNotFoundError
from runprof.snapshots import VERDICTS, CompareResult, compare, snapshot


def _nan_with_payload() -> torch.Tensor:
    bits = torch.tensor([float("nan")]).view(torch.int32).clone()
    bits |= 1  # another quiet NaN: same value class, different bytes
    return bits.view(torch.float32)


BASE = {"z": torch.tensor([0.0, 1.0]), "n": torch.tensor([float("nan")]), "same": torch.ones(3)}
TARGET = {"z": torch.tensor([-0.0, 1.0]), "n": _nan_with_payload(), "same": torch.ones(3)}


def _files(tmp_path: Path) -> dict[str, Path]:
    save_file(BASE, str(tmp_path / "a.safetensors"))
    save_file(TARGET, str(tmp_path / "b.safetensors"))
    torch.save(TARGET, tmp_path / "b.bin")
    return {"a": tmp_path / "a.safetensors", "b": tmp_path / "b.safetensors", "b.bin": tmp_path / "b.bin"}


def _pairs(tmp_path: Path) -> dict[str, tuple[object, object]]:
    f = _files(tmp_path)
    return {
        "tensors vs tensors": (BASE, TARGET),
        "tensors vs snapshot": (BASE, snapshot(TARGET)),
        "snapshot vs tensors": (snapshot(BASE), TARGET),
        "snapshot vs snapshot": (snapshot(BASE), snapshot(TARGET)),
        "checkpoint vs checkpoint": (f["a"], f["b"]),
        "checkpoint vs .bin": (f["a"], f["b.bin"]),
        "checkpoint vs snapshot of checkpoint": (f["a"], snapshot(f["b"])),
        "model tensors vs checkpoint": (BASE, f["b"]),
    }


def test_exact_is_bitwise_for_every_input(tmp_path: Path) -> None:
    # -0.0 vs +0.0 and two NaN payloads: equal as numbers, different as bytes; exact means bytes
    for how, (a, b) in _pairs(tmp_path).items():
        r = compare(a, b)
        assert r.verdict == "different", how
        assert [e.name for e in r.value_mismatch] == ["n", "z"], how
        assert r.totals.equal == 1, how  # "same"
        for entry in r.value_mismatch:
            if entry.differing_elements is not None:  # values on both sides: one element, |diff| 0
                assert (entry.differing_elements, entry.max_abs_diff) == (1, 0.0), how
        assert compare(a, a).identical and compare(b, b).identical, how


def test_a_tolerance_compares_numerically(tmp_path: Path) -> None:
    for how, (a, b) in _pairs(tmp_path).items():
        snap = "snapshot" in how
        for tol in ({"atol": 1e-6}, {"rtol": 1e-3}):
            if snap:  # digests are of bytes: a tolerance cannot apply, so it is refused
                with pytest.raises(InvalidArgumentError, match="Snapshot, which holds digests"):
                    compare(a, b, **tol)
            else:
                assert compare(a, b, **tol).identical, (how, tol)


def test_cli_exact_then_tolerant(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = _files(tmp_path)
    assert main(["compare", str(f["a"]), str(f["b"])]) == 1
    assert capsys.readouterr().out.rstrip().endswith("result: different (2 differences)")
    assert main(["compare", str(f["a"]), str(f["b"]), "--atol", "1e-6"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("result: identical (0 differences)")


def test_not_proven_when_values_are_unknown(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    meta = {"w": torch.empty(2, 3, device="meta"), "b": torch.ones(2)}
    r = compare(meta, {"w": torch.zeros(2, 3), "b": torch.ones(2)})
    assert (r.verdict, r.identical, r.differences, r.totals.values_unknown, r.totals.equal) == ("not_proven", False, 0, 1, 1)
    data = json.loads(json.dumps(r.to_dict()))
    assert data["verdict"] == "not_proven" and data["identical"] is False
    assert CompareResult.from_dict(data) == r
    sparse = {"w": torch.ones(4).to_sparse()}
    assert compare(sparse, sparse).verdict == "not_proven"
    assert compare(snapshot(meta), snapshot(meta)).verdict == "not_proven"  # no digest for meta tensors
    different = compare(meta, {"w": torch.zeros(2, 3), "b": torch.zeros(2)})
    assert different.verdict == "different"  # a known difference outranks unknown values
    assert set(VERDICTS) == {"identical", "different", "not_proven"}
    torch.save({"w": torch.empty(2, 3, device="meta"), "b": torch.ones(2)}, tmp_path / "meta.bin")
    torch.save({"w": torch.zeros(2, 3), "b": torch.ones(2)}, tmp_path / "real.bin")
    assert main(["compare", str(tmp_path / "real.bin"), str(tmp_path / "meta.bin"), "--json", str(tmp_path / "r.json")]) == 2
    out = capsys.readouterr().out.rstrip().splitlines()
    assert out[-1] == "result: not proven (1 tensor's values unknown)"
    assert json.loads((tmp_path / "r.json").read_text())["verdict"] == "not_proven"


def test_empty_checkpoint_reference_is_refused() -> None:
    with pytest.raises(ModelNotFoundError, match="empty checkpoint reference"):
        compare("", {"w": torch.ones(1)})
