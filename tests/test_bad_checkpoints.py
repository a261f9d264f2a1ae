"""A generated corpus of bad checkpoints: each gives one line on stderr and exit 2, or the right verdict.

Every case (``tests/bad_checkpoints_corpus.py``) builds its own target in ``tmp_path`` next to one good base
checkpoint (``base/model.safetensors``, two tiny tensors), runs ``python -m runprof compare BASE TARGET``
in-process, and checks the exit code, that stderr is exactly one ``runprof: error: ...`` line naming the
file (no traceback, no advice to load with ``weights_only=False``), and that no file under ``tmp_path``
changed (bytes and mtime).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from runprof.cli import main
from runprof.snapshots import CheckpointError, compare

from .bad_checkpoints_corpus import CASES, MARKER, TENSORS
from .conftest import REPO


# --- the corpus ----------------------------------------------------------------------------------
def _state(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.lstat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "base").mkdir()
    save_file(TENSORS, str(tmp_path / "base" / "model.safetensors"))
    torch.save(TENSORS, tmp_path / "base" / "pytorch_model.bin")  # what the .bin escape would reach
    return tmp_path / "base" / "model.safetensors"


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60, len(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_checkpoint(name: str, base: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a pickle that ran code would leave MARKER here
    build, expected = CASES[name]
    root = tmp_path / "case"
    root.mkdir()
    target = build(root, base)
    before = _state(tmp_path)
    rc = main(["compare", str(base), str(target)])
    out, err = capsys.readouterr()
    assert _state(tmp_path) == before, "an input file changed"
    assert not (tmp_path / MARKER).exists(), "a pickle ran code"
    if expected.startswith("verdict:"):
        verdict = expected.split(":", 1)[1]
        assert rc == {"identical": 0, "different": 1, "not_proven": 2}[verdict], (out, err)
        assert err == "" and out.splitlines()[-1].startswith(
            {"identical": "result: identical", "different": "result: different", "not_proven": "result: not proven"}
            [verdict]), out
        return
    lines = err.splitlines()
    assert rc == 2 and out == "", (rc, out)
    assert len(lines) == 1 and lines[0].startswith("runprof: error: "), err
    assert "Traceback" not in err and "weights_only=False" not in err and "set to `False`" not in err
    assert expected in lines[0], lines[0]
    assert str(target) in lines[0], lines[0]


def test_bad_checkpoint_as_base_too(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The same refusals with the bad checkpoint on the base side (a sample of the corpus)."""
    for i, name in enumerate(["safetensors: huge header length", "index: escape through ..", ".bin: garbage bytes",
                              ".bin: zip pickle running code", "index: weight_map a list"]):
        root = tmp_path / f"as_base{i}"
        root.mkdir()
        target = CASES[name][0](root, base)
        assert main(["compare", str(target), str(base)]) == 2, name
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and CASES[name][1] in err[0] and str(target) in err[0], err


def test_escape_example_from_the_issue(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A target whose index maps every tensor to the base's file, while its own shard differs everywhere:
    today's reading said identical; now the escaping index is refused and nothing is written."""
    base, target = tmp_path / "base", tmp_path / "target"
    base.mkdir()
    target.mkdir()
    save_file(TENSORS, str(base / "model.safetensors"))
    save_file({k: v + 1 for k, v in TENSORS.items()}, str(target / "model.safetensors"))
    (target / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: "../base/model.safetensors" for k in TENSORS}}))
    before = _state(tmp_path)
    assert main(["compare", str(base), str(target)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "../base/model.safetensors" in err[0] and "goes through .." in err[0]
    assert _state(tmp_path) == before
    with pytest.raises(CheckpointError, match="outside the checkpoint folder"):
        link = target / "linked.safetensors.index.json"
        (target / "model.safetensors").unlink()
        (target / "model.safetensors").symlink_to(base / "model.safetensors")
        link.write_text(json.dumps({"weight_map": {k: "model.safetensors" for k in TENSORS}}))
        compare(base, link)


def test_corpus_end_to_end(base: Path, tmp_path: Path) -> None:
    """Two cases through ``python -m runprof``: warnings (pickle protocol) and all, stderr is one line."""
    procs = []
    for i, name in enumerate([".bin: raw pickle (protocol 4)", "index: escape through .."]):
        root = tmp_path / f"e2e{i}"
        root.mkdir()
        target = CASES[name][0](root, base)
        procs.append((name, subprocess.Popen(
            [sys.executable, "-m", "runprof", "compare", str(base), str(target)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)))))
    for name, proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 2 and out == "", (name, out, err)
        assert len(err.splitlines()) == 1 and err.startswith("runprof: error: ") and CASES[name][1] in err, err
