"""Bad input gets one line and exit 2, never a traceback; no input file is ever overwritten.

The generated corpus (``tests/bad_input_corpus.py``) runs the CLI in-process (``main`` + capsys) and the public
API directly; the numbered items of the issue each have their own tests below, some through ``python -m runprof``
in a subprocess where only a real process shows the behaviour (pipes, environment, progress bars).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import runprof
from runprof.cli import common, main
from runprof.errors import InvalidArgumentError, RunprofError

from .bad_input_corpus import API, BASE, CLI, workspace
from .conftest import REPO

SHIPPED = REPO / "runprof" / "models" / "tiny_moe"
PROMPT = REPO / "examples" / "prompt.txt"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def _state(root: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime of every file under ``root`` (links not followed)."""
    return {str(p): (p.read_bytes(), p.lstat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def _one_line(capsys: pytest.CaptureFixture, argv: list[str], expected: str) -> str:
    rc = main(argv)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("runprof: error: "), err
    assert "Traceback" not in err and out == "", (out, err)
    assert expected in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def w(tmp_path: Path) -> Path:
    workspace(tmp_path)
    return tmp_path


# --- the corpus --------------------------------------------------------------------------------------------
def test_corpus_is_large_enough() -> None:
    assert len(CLI) + len(API) >= 150, (len(CLI), len(API))


def _xfail(reason: str | None) -> list:
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


@pytest.mark.parametrize("name", [pytest.param(n, marks=_xfail(c.xfail)) for n, c in CLI.items()])
def test_bad_cli_input(name: str, w: Path, capsys: pytest.CaptureFixture) -> None:
    case = CLI[name]
    argv = case.argv(w)
    before = _state(w)
    _one_line(capsys, argv, case.expect)
    assert _state(w) == before, "an input file changed"


@pytest.mark.parametrize("name", [pytest.param(n, marks=_xfail(c.xfail)) for n, c in API.items()])
def test_bad_api_input(name: str, w: Path) -> None:
    case = API[name]
    with pytest.raises(RunprofError) as info:
        case.call(w)
    text = str(info.value)
    assert len(text.splitlines()) == 1 and case.expect in text, text


# --- item 1: --json never overwrites an input; an interrupted write leaves the old file or none ---------
@pytest.fixture
def checkpoints(tmp_path: Path) -> tuple[Path, Path]:
    """CK/model.safetensors and ckB: two shards with their model.safetensors.index.json."""
    ck, ckb = tmp_path / "CK", tmp_path / "ckB"
    ck.mkdir(), ckb.mkdir()
    tensors = {"a": torch.ones(2), "b": torch.zeros(3)}
    save_file(tensors, str(ck / "model.safetensors"))
    save_file({"a": tensors["a"]}, str(ckb / "model-00001-of-00002.safetensors"))
    save_file({"b": tensors["b"]}, str(ckb / "model-00002-of-00002.safetensors"))
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    (ckb / "model.safetensors.index.json").write_text(json.dumps(index))
    return ck, ckb


def test_compare_json_onto_its_inputs_is_refused(checkpoints: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    ck, ckb = checkpoints
    index = ckb / "model.safetensors.index.json"
    before = _state(tmp_path)
    for argv in ([str(ck), str(ckb), "--json", str(ck / "model.safetensors")],
                 [str(ck), str(ckb), "--json", str(index)],
                 # the index names shards beside it: they are inputs too
                 [str(ck / "model.safetensors"), str(index), "--json", str(ckb / "model-00001-of-00002.safetensors")],
                 [str(ck / "model.safetensors"), str(index), "--json", str(ckb / "new.json")]):
        _one_line(capsys, ["compare", *argv], "would overwrite the input")
    assert _state(tmp_path) == before
    assert main(["compare", str(ck), str(ckb), "--json", str(tmp_path / "out.json")]) == 0  # elsewhere: written
    assert json.loads((tmp_path / "out.json").read_text())["verdict"] == "identical"
    capsys.readouterr()


def test_run_and_count_json_onto_their_inputs_are_refused(tmp_path: Path, capsys) -> None:
    model_dir = tmp_path / "DIR"
    shutil.copytree(SHIPPED, model_dir)
    (tmp_path / "p.txt").write_text("def f(x):\n")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps(BASE))
    before = _state(tmp_path)
    shipped_before = _state(SHIPPED)
    p = str(tmp_path / "p.txt")
    _one_line(capsys, [str(model_dir), "--prompt", p, "--json", str(model_dir / "model.safetensors")], "would overwrite")
    _one_line(capsys, ["--prompt", p, "--json", p], "would overwrite the input")
    _one_line(capsys, ["--prompt", p, "--json", str(SHIPPED / "model.safetensors")], "runprof's own folder")
    _one_line(capsys, ["count", str(tmp_path / "cfg" / "config.json"), "--json", str(tmp_path / "cfg" / "config.json")],
              "would overwrite the input")
    _one_line(capsys, ["bench", "--prompt", p, "--top-k", "1", "--json", p], "would overwrite the input")
    assert _state(tmp_path) == before and _state(SHIPPED) == shipped_before


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "out.json"
    out.write_text('{"old": true}\n')
    os.chmod(out, 0o640)
    old = _state(tmp_path)
    real_fdopen = os.fdopen

    class HalfWritten:
        """A file whose write() puts half the text on disk, then fails (a full disk, a signal)."""

        def __init__(self, f, error: BaseException) -> None:
            self.f, self.error = f, error

        def write(self, text: str) -> int:
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            raise self.error

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

    for error, rc, said in ((OSError(28, "No space left on device"), 2, "cannot write (No space left on device)"),
                            (KeyboardInterrupt(), 130, "interrupted")):
        monkeypatch.setattr(common.os, "fdopen", lambda fd, *a, e=error, **k: HalfWritten(real_fdopen(fd, *a, **k), e))
        assert main(["count", "mixtral", "--no-layers", "--json", str(out)]) == rc
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, err
        assert _state(tmp_path) == old, "the old file changed or a temporary file was left"
    monkeypatch.undo()

    def broken_dumps(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(common.json, "dumps", broken_dumps)
    assert main(["count", "mixtral", "--no-layers", "--json", str(out)]) == 130
    capsys.readouterr()
    assert _state(tmp_path) == old
    monkeypatch.undo()
    assert main(["count", "mixtral", "--no-layers", "--json", str(out)]) == 0  # and a good write replaces it
    capsys.readouterr()
    assert json.loads(out.read_text())["kind"] == "count" and out.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_json_through_a_symlink_writes_its_target(tmp_path: Path, capsys) -> None:
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    assert main(["count", "mixtral", "--no-layers", "--json", str(tmp_path / "link.json")]) == 0
    capsys.readouterr()
    assert (tmp_path / "link.json").is_symlink() and json.loads((tmp_path / "real.json").read_text())["kind"] == "count"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_json_in_a_read_only_folder_is_refused_before_the_work(tmp_path: Path, capsys) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _one_line(capsys, ["count", "mixtral", "--json", str(ro / "x.json")], "permission denied")
    finally:
        ro.chmod(0o700)


# --- item 8: configs count cannot build, one line; transformers quiet in a real process ------------------
@pytest.mark.parametrize("field, value, expected", [
    ("hidden_size", -128, "hidden_size -128: must be at least 1"),
    ("hidden_size", "abc", "hidden_size 'abc': expected int, got str"),
    ("hidden_size", None, "hidden_size None: expected int, got NoneType"),
    ("hidden_size", 128.5, "hidden_size 128.5: expected int, got float"),
    # one [10^12, 10^12] float32 projection: 10^24 elements x 4 bytes
    ("hidden_size", 10**12, "would need 4.00e+24 bytes"),
    ("vocab_size", 0, "vocab_size 0: a causal LM needs a vocabulary of at least 1 token"),
])
def test_count_of_unbuildable_configs(field: str, value, expected: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**BASE, field: value}))
    _one_line(capsys, ["count", str(path)], expected)
    with pytest.raises(RunprofError, match="vocab|hidden"):
        runprof.count_params({**BASE, field: value})


def test_vocab_0_is_one_line_outside_pytest(tmp_path: Path) -> None:
    """Without pytest's TRANSFORMERS_VERBOSITY, the CLI still prints no transformers or torch warning."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**BASE, "vocab_size": 0}))
    env = {k: v for k, v in ENV.items() if k != "TRANSFORMERS_VERBOSITY"}
    proc = subprocess.run([sys.executable, "-m", "runprof", "count", str(path)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"runprof: error: {path}: vocab_size 0: a causal LM needs a vocabulary of at "
                                        "least 1 token; fix vocab_size in the config"], proc.stderr


# --- item 13: the API ---------------------------------------------------------------------------------------
def test_api_errors_are_runprof_errors_of_one_line() -> None:
    from runprof.errors import TrackingError, UnsupportedModelError

    cases = [
        (lambda: runprof.count_params({"model_type": "zzz"}), UnsupportedModelError, "'zzz' is not known"),
        (lambda: runprof.count_params({**BASE, "hidden_size": -4}), InvalidArgumentError, "hidden_size -4"),
        (lambda: runprof.memory_ledger({"a": torch.ones(1)}), InvalidArgumentError, "not dict"),
        (lambda: runprof.track(torch.nn.Linear(2, 2), nvml_interval_s="a").__enter__(), TrackingError,
         "nvml_interval_s='a'"),
    ]
    for call, kind, expected in cases:
        with pytest.raises(kind) as info:
            call()
        assert len(str(info.value).splitlines()) == 1 and expected in str(info.value)


# --- item 14: --json "" and a missing folder ------------------------------------------------------------------
def test_json_empty_is_refused_and_a_missing_folder_is_created(tmp_path: Path, capsys) -> None:
    _one_line(capsys, ["count", "mixtral", "--json", ""], "--json '': give a file path")
    out = tmp_path / "no" / "such" / "dir" / "x.json"
    assert main(["count", "mixtral", "--no-layers", "--json", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"created folder {out.parent}", f"wrote {out}"]
    assert json.loads(out.read_text())["kind"] == "count"


# --- item 15: an empty reference; a huge prompt answers fast ----------------------------------------------
def test_count_params_of_an_empty_string() -> None:
    with pytest.raises(InvalidArgumentError, match="empty model reference"):
        runprof.count_params("")


def test_a_huge_prompt_is_refused_before_it_is_tokenized(tmp_path: Path, capsys) -> None:
    big = tmp_path / "big.txt"
    big.write_text(PROMPT.read_text() * (2_400_000 // len(PROMPT.read_text()) + 1))  # 2.4 MB of Python source
    assert big.stat().st_size >= 2_400_000
    main(["--prompt", str(PROMPT), "--max-new-tokens", "600"])  # warm: tokenizer and transformers imported
    capsys.readouterr()
    t0 = time.perf_counter()
    line = _one_line(capsys, ["--prompt", str(big), "--max-new-tokens", "8"], "past the model's context of 512 tokens")
    elapsed = time.perf_counter() - t0
    assert elapsed < 3, f"took {elapsed:.1f} s"
    assert "the prompt is more than" in line and "characters alone" in line


def test_a_prompt_just_past_the_context_is_still_measured_exactly(tmp_path: Path, capsys) -> None:
    """Short prompts are tokenized whole: the message gives their exact length."""
    # the shipped BPE splits "word word " into "word", " w", "ord", " ": 1 BOS + 1 + 599 x 2 + 1 = 1201 tokens
    (tmp_path / "p.txt").write_text("word " * 600)
    line = _one_line(capsys, ["--prompt", str(tmp_path / "p.txt"), "--max-new-tokens", "8"], "past the model's context")
    assert "the prompt is 1201 tokens and --max-new-tokens 8 would reach 1209" in line


# --- item 16: pipes closed early, progress bars in a redirected stderr -------------------------------------
def test_a_pipe_closed_early_is_quiet(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "runprof", "count", "mixtral"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV, cwd=tmp_path)
    proc.stdout.close()  # the reader left before the first line (`| head -0`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141) and "Traceback" not in err and "BrokenPipe" not in err, err
    shell = subprocess.run(f"{sys.executable} -m runprof count mixtral 2>err.txt | head -3", shell=True,
                           capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120)
    assert len(shell.stdout.splitlines()) == 3 and (tmp_path / "err.txt").read_text() == ""


def test_no_progress_frames_in_a_redirected_stderr(tmp_path: Path) -> None:
    with open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.run([sys.executable, "-m", "runprof", "--prompt", str(PROMPT), "--max-new-tokens", "4",
                               "--no-memory"], stdout=subprocess.DEVNULL, stderr=err, env=ENV, cwd=tmp_path,
                              timeout=180)
    text = (tmp_path / "err.txt").read_text()
    assert proc.returncode == 0 and "\r" not in text and "Loading weights" not in text, text


# --- item 17: train_tiny_moe.py never replaces the shipped model unasked -------------------------------------
@pytest.fixture(scope="module")
def trainer():
    spec = importlib.util.spec_from_file_location("train_tiny_moe", REPO / "examples" / "train_tiny_moe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trainer_writes_a_new_folder_by_default(trainer, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert trainer.parse_args([]).out == Path("tiny_moe_out")
    assert trainer.parse_args(["--out", str(tmp_path / "m")]).out == tmp_path / "m"
    for argv in (["--out", "shipped"], ["--replace-shipped"], ["--replace-shipped", "--out", "shipped"]):
        assert trainer.parse_args(argv).out == trainer.SHIPPED_OUT
    assert trainer.SHIPPED_OUT.resolve() == SHIPPED.resolve()


@pytest.mark.parametrize("argv, expected", [
    (["--out", str(SHIPPED)], "pass --out shipped"),  # a path that leads there is not asking by name
    (["--out", str(SHIPPED) + "/"], "pass --out shipped"),
    (["--replace-shipped", "--out", "elsewhere"], "pass one of them"),
    (["--out", ""], "give a folder"),
    (["--out", "MODEL"], "already holds model files (config.json, model.safetensors)"),
    (["--out", "FILE"], "is a file"),
    (["--steps", "0"], "--steps 0 must be at least 1"),
    (["--seq-len", "1"], "--seq-len >= 2"),
    (["--vocab-size", "4"], "must exceed the 4 special tokens"),
])
def test_trainer_refuses(trainer, argv: list[str], expected: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "MODEL").mkdir()
    (tmp_path / "MODEL" / "config.json").write_text("{}")
    (tmp_path / "MODEL" / "model.safetensors").write_bytes(b"")
    (tmp_path / "FILE").write_text("")
    with pytest.raises(SystemExit) as info:
        trainer.parse_args(argv)
    assert info.value.code == 2 and expected in capsys.readouterr().err
    assert trainer.parse_args(["--out", "MODEL", "--overwrite"]).out == Path("MODEL")


def test_trainer_dry_run_writes_nothing(tmp_path: Path) -> None:
    shipped_before = _state(SHIPPED)
    for argv, said in (([], "[out] tiny_moe_out\n"), (["--out", "shipped"], "(replaces runprof's shipped model)")):
        proc = subprocess.run([sys.executable, str(REPO / "examples" / "train_tiny_moe.py"), "--dry-run", *argv],
                              capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=60)
        assert proc.returncode == 0 and said in proc.stderr and "nothing written" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == [] and _state(SHIPPED) == shipped_before


@pytest.mark.parametrize("command", [["run"], ["bench", "--top-k", "1"], ["render"]])
def test_csv_checked_before_the_work(tmp_path: Path, capsys: pytest.CaptureFixture, command: list[str]) -> None:
    """``--csv`` naming a file, the prompt, or runprof's own folder is one line and exit 2 before any work
    (nothing on stdout: no report was computed), the file unchanged."""
    prompt = tmp_path / "in.txt"
    prompt.write_text("hello there", encoding="utf-8")
    before = _state(tmp_path)
    if command == ["render"]:
        saved = tmp_path / "r.json"
        saved.write_text(json.dumps({"kind": "run"}), encoding="utf-8")
        command = ["render", str(saved)]
        before = _state(tmp_path)
    tail = [] if command[0] == "render" else ["--prompt", str(prompt), "--max-new-tokens", "2"]
    _one_line(capsys, [*command, *tail, "--csv", str(prompt)], "is a file")
    _one_line(capsys, [*command, *tail, "--csv", str(SHIPPED)], "runprof's own folder")
    assert _state(tmp_path) == before
