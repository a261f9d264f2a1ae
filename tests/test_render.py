"""One door for results: ``load_result`` + ``render`` reproduce every report the CLI prints, bad JSON is one
line and exit 2, and golden files pin each report's text (``RUNPROF_UPDATE_GOLDEN=1`` rewrites them: review
the diff)."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

import runprof
from runprof.cli import main
from runprof.errors import InvalidArgumentError
from runprof.results import CountResult, LedgerRow
from runprof.routing.timing import Spread

from .conftest import REPO
from .steady import ENV, golden_run

GOLDEN = Path(__file__).parent / "golden"
PROMPT = str(REPO / "examples" / "prompt.txt")


def _cli(capsys, args: list[str]) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("ck")
    g = torch.Generator().manual_seed(0)
    base = {"model.embed_tokens.weight": torch.randn(16, 8, generator=g),
            "model.layers.0.mlp.experts.down_proj": torch.randn(4, 8, 6, generator=g),
            "model.norm.weight": torch.ones(8)}
    target = {k: v.clone() for k, v in base.items()}
    target["model.layers.0.mlp.experts.down_proj"][2, 1, 3] += 0.5
    target["lm_head.weight"] = torch.zeros(16, 8)
    del target["model.norm.weight"]
    save_file(base, str(d / "a.safetensors"))
    save_file(target, str(d / "b.safetensors"))
    return d


@pytest.mark.parametrize("args", [
    ["count", "mixtral"],
    ["count", "olmoe"],
    ["--prompt", PROMPT, "--max-new-tokens", "3", "--threads", "1"],
    ["bench", "--prompt", PROMPT, "--top-k", "1,2", "--repeats", "1", "--warmup", "0", "--max-new-tokens", "2",
     "--threads", "1"],
    "compare",
], ids=["count", "count-olmoe", "run", "bench", "compare"])
def test_render_of_every_kind_is_what_the_command_printed(args, tmp_path, capsys, checkpoints):
    if args == "compare":
        args = ["compare", str(checkpoints / "a.safetensors"), str(checkpoints / "b.safetensors")]
    out = tmp_path / "r.json"
    rc, printed, _ = _cli(capsys, [*args, "--json", str(out)])
    assert rc in (0, 1)
    assert _cli(capsys, ["render", str(out)]) == (0, printed, "")
    kind = json.loads(out.read_text())["kind"]
    assert runprof.render(runprof.load_result(out)) + "\n" == printed
    assert runprof.load_result(out).to_dict() == json.loads(out.read_text())
    assert kind == {"count": "count", "bench": "bench", "compare": "compare"}.get(args[0], "run")


def test_a_snapshot_loads_and_renders():
    s = runprof.snapshot({"w": torch.ones(2, 3), "b": torch.zeros(4, dtype=torch.bfloat16)})
    again = runprof.load_result(json.loads(json.dumps(s.to_dict())))
    assert again == s
    text = runprof.render(again)
    assert text.splitlines()[0] == "snapshot of state_dict: 2 tensors, 32 B"  # 6 x 4 B + 4 x 2 B


BAD = {
    "a list": ("[1, 2]", "a saved result is a JSON object, not a JSON list"),
    "a string": ('"run"', "a saved result is a JSON object, not a JSON str"),
    "schema only": ('{"schema": "runprof/1"}', "unknown result kind None; runprof writes the kinds run, count"),
    "unknown kind": ('{"schema": "runprof/1", "kind": "flamegraph"}', "unknown result kind 'flamegraph'"),
    "other schema": ('{"schema": "other/9", "kind": "run"}', "schema 'other/9' is not 'runprof/1'"),
    "count without total": (None, "not a complete count result (key 'total' is missing)"),
    "runtime null": (None, "a saved run result needs a 'runtime' object"),
    "not JSON": ("{", "not valid JSON"),
}


def _bad_json(case: str, tmp_path: Path) -> Path:
    path = tmp_path / "bad.json"
    text = BAD[case][0]
    if case == "count without total":
        d = runprof.count_params("olmoe").to_dict()
        del d["params"]["total"]
        text = json.dumps(d)
    elif case == "runtime null":
        d = runprof.count_params("olmoe").to_dict()
        d.update(kind="run", runtime=None)
        text = json.dumps(d)
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", list(BAD))
def test_bad_json_is_one_line_and_exit_2(case, tmp_path, capsys):
    path = _bad_json(case, tmp_path)
    rc, out, err = _cli(capsys, ["render", str(path)])
    assert (rc, out) == (2, "")
    assert err.count("\n") == 1 and "Traceback" not in err and BAD[case][1] in err, err
    with pytest.raises(InvalidArgumentError, match="bad.json"):
        runprof.load_result(path)


def test_render_refuses_what_is_not_a_result(tmp_path, capsys):
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    rc, _, err = _cli(capsys, ["render", str(latin)])
    assert rc == 2 and "not UTF-8 text" in err and err.count("\n") == 1
    rc, _, err = _cli(capsys, ["render", str(tmp_path / "missing.json")])
    assert rc == 2 and "no such file" in err
    with pytest.raises(InvalidArgumentError, match="not dict"):
        runprof.render({"schema": "runprof/1"})


# --- golden files -----------------------------------------------------------------------------------------
def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("RUNPROF_UPDATE_GOLDEN"):
        path.write_text(text + "\n", encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text + "\n", f"{name} changed: RUNPROF_UPDATE_GOLDEN=1 to accept"


def test_golden_count():
    _check_golden("count_mixtral.txt", runprof.render(runprof.count_params("mixtral"), width=80))
    assert isinstance(runprof.load_result(runprof.count_params("olmoe").to_dict()), CountResult)


def test_golden_run_full():
    r = golden_run()
    assert isinstance(r.memory.rows[0], LedgerRow)
    _check_golden("run_tiny_moe_full.txt", runprof.render(r, full=True, width=160))


def test_full_reproduces_the_detail_before_the_summary():
    """Every line of the run report before the summary existed (its runtime part: the static tables stay in
    ``count``) is in ``--full``, except the memory rows that do not apply on a CPU, which are named in one line."""
    before = (GOLDEN / "run_detail_before_summary.txt").read_text(encoding="utf-8").splitlines()
    detail = before[before.index(next(x for x in before if x.startswith("tokens: prefill"))):]
    full = runprof.render(golden_run(), full=True, width=160).splitlines()

    def words(line: str) -> str:  # a table without the dashed rows may have narrower columns
        return " ".join(line.replace("-", " ").split()) if set(line) <= {"-", " "} else " ".join(line.split())

    shown = {words(x) for x in full}
    missing = [x for x in detail if words(x) not in shown and not set(x) <= {"-", " "}]
    dashed = [x.split()[0] for x in missing]
    assert all(x.split()[1] == "-" for x in missing), missing  # only the "-" rows are gone
    assert f"not shown (model is on the CPU: no GPU rows): {', '.join(dashed)}" in full
    assert len(dashed) == 5


def test_golden_compare(checkpoints):
    r = runprof.compare(checkpoints / "a.safetensors", checkpoints / "b.safetensors")
    r = dataclasses.replace(r, base="a.safetensors", target="b.safetensors")
    _check_golden("compare.txt", runprof.render(r))


def test_golden_bench():
    from runprof.routing.bench import bench

    loaded = runprof.load_model()
    ids = loaded.tokenizer("def f(x):\n    return x", return_tensors="pt")["input_ids"]
    r = bench(loaded.model, ids, top_ks=[1, 2], batch_sizes=[1, 2], repeats=1, warmup=0, max_new_tokens=3,
              name="tiny-moe")
    steady = Spread(100.0, 90.0, 110.0)
    runs = tuple(dataclasses.replace(run, prefill_s=(0.01,), decode_s=(0.02,), prefill_tokens_per_s=steady,
                                     decode_tokens_per_s=steady) for run in r.runs)
    steady_bench = dataclasses.replace(r, runs=runs, cpu_threads=1, env=ENV)
    _check_golden("bench_tiny_moe.txt", runprof.render(steady_bench, full=True, width=100))
