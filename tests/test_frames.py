"""Tables for pandas: ``to_dataframe`` for each table (skipped without pandas), the records behind them with
exact values, and ``--csv DIR`` files that the standard csv module reads."""
from __future__ import annotations

import csv

import pytest

import runprof
from runprof.cli import main
from runprof.errors import InvalidArgumentError
from runprof.results.frames import records, tables

from .steady import golden_run


@pytest.fixture(scope="module")
def run():
    return golden_run(new=4)


@pytest.fixture(scope="module")
def bench_result():
    from runprof.routing.bench import bench

    loaded = runprof.load_model()
    ids = loaded.tokenizer("def f(x):\n    return x", return_tensors="pt")["input_ids"]
    return bench(loaded.model, ids, top_ks=[1, 2], batch_sizes=[1], repeats=1, warmup=0, max_new_tokens=2)


def test_run_records(run):
    load = records(run, "expert_load")
    assert len(load) == 4 * 8  # 4 MoE layers x 8 experts
    # 13 rows (10 prompt + 3 decode) x k = 2 assignments per layer
    assert [sum(x["assignments"] for x in load if x["layer_index"] == i) for i in range(4)] == [26] * 4
    assert {x["uniform_share"] for x in load} == {1 / 8}
    layers = records(run, "layers")
    assert [x["layer"] for x in layers] == list(run.runtime.moe_layer_names)
    assert layers[0]["assignments"] == 26 and layers[0]["decode_steps"] == 3
    assert layers[0]["max_share"] == max(run.runtime.expert_load[0]) / 26
    steps = records(run, "steps")
    assert [x["phase"] for x in steps] == ["prefill", "decode", "decode", "decode"]
    assert steps[1]["experts_touched:model.layers.0.mlp"] == 2  # one token, k = 2
    memory = records(run, "memory")
    assert {x["device"] for x in memory} == {"total"}
    assert next(x for x in memory if x["name"] == "torch_allocated") == {
        "device": "total", "name": "torch_allocated", "bytes": None, "source": "torch.cuda", "part": False,
        "cause": "not_cuda"}
    with pytest.raises(InvalidArgumentError, match="the tables of this result are expert_load, layers, steps"):
        records(run, "flops")


def test_bench_records(bench_result):
    runs = records(bench_result, "runs")
    assert [(x["top_k"], x["batch_size"], x["experts_per_token_min"]) for x in runs] == [(1, 1, 1), (2, 1, 2)]
    layers = records(bench_result, "layers")
    assert len(layers) == 2 * 4 and "load" not in layers[0] and layers[0]["first_choice_random"] == 1 / 8
    assert len(records(bench_result, "expert_load")) == 2 * 4 * 8


@pytest.mark.parametrize("what", ["expert_load", "layers", "steps", "memory"])
def test_run_to_dataframe(run, what):
    pd = pytest.importorskip("pandas")
    df = run.to_dataframe(what)
    assert isinstance(df, pd.DataFrame) and len(df) == len(records(run, what))
    assert list(df.columns) == list(records(run, what)[0])


@pytest.mark.parametrize("what", ["runs", "layers", "expert_load"])
def test_bench_to_dataframe(bench_result, what):
    pytest.importorskip("pandas")
    df = bench_result.to_dataframe(what)
    assert len(df) == len(records(bench_result, what))
    if what == "runs":
        assert df["top_k"].tolist() == [1, 2]


def test_csv_files_load_with_the_csv_module(tmp_path, capsys):
    folder = tmp_path / "csv"
    assert main(["--prompt-text", "def f(x):\n    return x", "--max-new-tokens", "3", "--threads", "1",
                 "--csv", str(folder), "--json", str(tmp_path / "r.json")]) == 0
    r = runprof.load_result(tmp_path / "r.json")
    for name in tables(r):
        with open(folder / f"{name}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        expected = records(r, name)
        assert len(rows) == len(expected) and list(rows[0]) == list(expected[0])
        first = {k: "" if v is None else str(v) for k, v in expected[0].items()}
        assert rows[0] == first
    bench_dir = tmp_path / "bench"
    assert main(["bench", "--prompt-text", "def f(x):\n    return x", "--top-k", "1", "--repeats", "1", "--warmup",
                 "0", "--max-new-tokens", "2", "--threads", "1", "--csv", str(bench_dir)]) == 0
    assert sorted(p.name for p in bench_dir.iterdir()) == ["expert_load.csv", "layers.csv", "runs.csv"]
    assert main(["render", str(tmp_path / "r.json"), "--csv", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "steps.csv").read_text() == (folder / "steps.csv").read_text()
