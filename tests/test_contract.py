"""One documented JSON contract: every JSON every command writes validates against runprof/schema.json
(documented in docs/json.md), carries the header (schema, kind, versions, device name, UTC time), loads back
equal with its env, and renders the report the command printed."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import torch

import runprof
from runprof.cli import main
from runprof.results import KINDS

from .conftest import REPO

jsonschema = pytest.importorskip("jsonschema", reason="pip install runprof[test] (jsonschema) to check the contract")
SCHEMA = json.loads((REPO / "runprof" / "schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def _check(d: dict) -> None:
    errors = sorted(VALIDATOR.iter_errors(d), key=lambda e: list(e.path))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message[:200]}" for e in errors[:5]]
    env = d["env"]
    assert d["schema"] == "runprof/1" and d["kind"] in KINDS
    assert env["runprof"] == runprof.__version__ and env["torch"] == torch.__version__ and env["transformers"]
    assert env["device_name"] and datetime.strptime(env["created_utc"], "%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("ck")
    save_file({"a": torch.ones(3, 4), "e.experts.down_proj": torch.zeros(2, 3, 4)}, str(d / "a.safetensors"))
    save_file({"a": torch.ones(3, 4) * 2, "e.experts.down_proj": torch.ones(2, 3, 4), "b": torch.zeros(2)},
              str(d / "b.safetensors"))
    return d


COMMANDS = {
    "run": ["--prompt-text", "def f(x):\n    return x", "--max-new-tokens", "3", "--threads", "1"],
    "run-html-verified": ["--prompt-text", "def f(x):\nclass A:", "--lines", "--max-new-tokens", "3", "--threads",
                          "1", "--html", "HTML", "--verify-weights"],
    "run-no-memory-k1": ["--max-new-tokens", "2", "--threads", "1", "--no-memory", "--top-k", "1",
                         "--config-top-k", "2"],
    "count": ["count", "mixtral"],
    "count-quantized": ["count", "gpt-oss-20b"],
    "count-dense": ["count", "mistral-7b"],
    "bench": ["bench", "--prompt-text", "def f(x):\n    return x", "--top-k", "1,2", "--batch-size", "1,2",
              "--repeats", "1", "--warmup", "0", "--max-new-tokens", "2", "--threads", "1"],
    "compare": ["compare", "A", "B"],
}


@pytest.mark.parametrize("case", list(COMMANDS))
def test_every_json_written_validates_and_renders_again(case, tmp_path, capsys, checkpoints, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    subst = {"HTML": str(tmp_path / "r.html"), "A": str(checkpoints / "a.safetensors"),
             "B": str(checkpoints / "b.safetensors")}
    out = tmp_path / "r.json"
    rc = main([subst.get(a, a) for a in COMMANDS[case]] + ["--json", str(out)])
    assert rc in (0, 1)
    printed = capsys.readouterr().out
    d = json.loads(out.read_text())
    _check(d)
    result = runprof.load_result(out)
    assert result.to_dict() == d and result.env == runprof.load_result(d).env  # env round-trips
    assert runprof.render(result) + "\n" == printed
    assert main(["render", str(out)]) == 0 and capsys.readouterr().out == printed


def test_a_snapshot_validates():
    d = json.loads(json.dumps(runprof.snapshot({"w": torch.ones(2, 3)}).to_dict()))
    _check(d)
    assert d["env"]["device"] == "cpu"


def test_the_contract_refuses_an_undocumented_key_and_a_missing_header():
    d = runprof.count_params("olmoe").to_dict()
    _check(d)
    for broken in ({**d, "surprise": 1}, {k: v for k, v in d.items() if k != "env"},
                   {**d, "env": {**d["env"], "device_name": None}}):
        assert list(VALIDATOR.iter_errors(broken))


def test_env_is_made_with_the_result_not_when_written():
    r = runprof.count_params("olmoe")
    assert r.to_dict()["env"] == r.to_dict()["env"] == r.env.to_dict()
    assert r.env.device == "meta"
    old = {k: v for k, v in r.to_dict().items() if k != "env"}  # written before runprof recorded an env
    assert runprof.load_result(old).env is None and runprof.load_result(old) == r


def test_docs_name_every_kind_and_the_schema():
    doc = (REPO / "docs" / "json.md").read_text(encoding="utf-8")
    assert "runprof/schema.json" in doc
    for kind in KINDS:
        assert f"| `{kind}` |" in doc
    assert set(SCHEMA["$defs"]) >= set(KINDS)
    assert Path(REPO / "runprof" / "schema.json").is_file()
