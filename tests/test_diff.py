"""``python -m runprof diff``: two runs side by side, with exact changes."""
from __future__ import annotations

import json

import pytest

from runprof.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("diff")
    for k in (2, 1):
        assert main(["--prompt-text", "def f(x):\n    return x", "--max-new-tokens", "4", "--threads", "1",
                     "--top-k", str(k), "--json", str(d / f"k{k}.json")]) == 0
    return d / "k2.json", d / "k1.json"


def test_diff_shows_the_exact_change_in_active_params(runs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    capsys.readouterr()
    assert main(["diff", str(runs[0]), str(runs[1])]) == 0
    out = capsys.readouterr().out
    # k 2 -> 1 removes one expert per token in each of the 4 MoE layers: 4 x 73,728 = 294,912 params;
    # 1,053,824 - 294,912 = 758,912 (-28.0%)
    row = next(x for x in out.splitlines() if x.startswith("active params per token (all), measured"))
    assert row.split()[-4:] == ["1,053,824", "758,912", "-294,912", "(-28.0%)"]
    assert next(x for x in out.splitlines() if x.startswith("experts per token")).split()[-4:] == \
        ["2", "1", "-1", "(-50.0%)"]
    assert "top-k (config / router / measured)   2 / 2 / 2   1 / 1 / 1" in " ".join(out.split(" " * 3)) or \
        "2 / 2 / 2" in out and "1 / 1 / 1" in out
    for name in ("decode tokens/s", "time to first token", "memory: process RSS peak", "model.layers.3.mlp",
                 "total variation"):
        assert name in out, name


def test_diff_full_lists_every_expert(runs, capsys):
    assert main(["diff", str(runs[0]), str(runs[1]), "--full"]) == 0
    out = capsys.readouterr().out
    a, b = (json.loads(p.read_text())["runtime"]["expert_load"] for p in runs)
    rows = [x.split() for x in out.splitlines() if x.startswith("model.layers.0.mlp  ") and " e" in x[18:24]]
    assert len(rows) == 8  # one row per expert of layer 0
    share_a = [100 * x / sum(a[0]) for x in a[0]]
    assert [float(r[2]) for r in rows] == [round(s, 1) for s in share_a]


def test_diff_refuses_what_is_not_a_run(runs, tmp_path, capsys):
    count = tmp_path / "count.json"
    assert main(["count", "olmoe", "--json", str(count)]) == 0
    capsys.readouterr()
    assert main(["diff", str(runs[0]), str(count)]) == 2
    assert "diff compares two runs" in capsys.readouterr().err
