"""The summary comes first: golden files of the shipped model's summary at 80 and 120 columns, at most 12
lines, detail only when asked for, rows that do not apply named in one line, bench's summary in 100 columns."""
from __future__ import annotations

import dataclasses

import pytest

import runprof
from runprof.errors import InvalidArgumentError
from runprof.models.resolve import SHIPPED_PROMPT
from runprof.renderers.run_report import SECTIONS
from runprof.renderers.summary import SUMMARY_MAX_LINES, render_summary
from runprof.results import Cause, LedgerRow, MemoryLedger

from .steady import ENV, golden_run
from .test_render import _check_golden


@pytest.fixture(scope="module")
def run():
    r = golden_run(SHIPPED_PROMPT.read_text(encoding="utf-8"), new=8)
    return dataclasses.replace(r, extra={**r.extra, "generated_first_line": "    return x"})


def _widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


@pytest.mark.parametrize("width", [80, 120])
def test_golden_summary(run, width):
    text = runprof.render(run, width=width)
    _check_golden(f"summary_tiny_moe_{width}.txt", text)
    assert _widest(text) <= width
    assert len(text.splitlines()) <= SUMMARY_MAX_LINES


def test_summary_says_the_answer(run):
    lines = render_summary(run, width=None).splitlines()
    assert len(lines) == 9  # model, tokens, latency, active, experts, load, memory, verdict, generated
    text = "\n".join(lines)
    assert "tiny-moe  (MixtralForCausalLM, bfloat16) on cpu (test CPU)" == lines[0]
    # 194 prompt tokens, 8 generated; rows: the prefill's 194 and 7 decode steps of 1
    assert "tokens: prompt 194, generated 8; rows computed 201 (prefill 194, decode 7)" in text
    # pinned: 50 ms prefill of the 194 prompt tokens (3,880 tokens/s), 6 ms per decode step of one token (167)
    assert "latency: first token 50 ms; decode 167 tokens/s (step mean 6 ms, median 6 ms); prefill 3,880 tokens/s" \
        in lines[2]
    # static all = 2,823,296 - 4 layers x (8 - 2) experts x 73,728 params = 1,053,824
    assert "active params per token (convention all): measured 1,053,824 = static 1,053,824" in text
    assert "experts per token per MoE layer: 2 (k: config 2, router 2, measured 2)" in text
    assert "uniform 12.5%" in text and "most " in text and "least " in text
    assert lines[6] == "memory: weights 5.39 MiB, KV 201.00 KiB, peak RSS 1.00 GiB (CPU: no GPU rows)"
    # 2 x 2 kv heads x 32 head dim x 2 B x 4 layers x 201 tokens = 205,824 B = 201 KiB
    assert lines[7] == "verdict: measured = static; each token used exactly k = 2 experts per MoE layer"


def test_no_detail_without_asking_and_sections_on_request(run):
    summary = runprof.render(run, width=120)
    assert "reconcile " not in summary and "memory    " not in summary
    shown = runprof.render(run, show=["memory", "reconcile"], width=120)
    assert shown.startswith(summary + "\n\n")
    assert "reconcile" in shown and "not shown (model is on the CPU: no GPU rows): torch_allocated" in shown
    assert shown.index("reconcile") < shown.index("memory  ")  # the sections keep their order
    full = runprof.render(run, full=True, width=120)
    for marker in ("active params per token  ", "expert load % (layer)", "reconcile", "memory", "latency",
                   "distinct\n", "experts touched  "):
        assert marker in full, marker
    assert len(SECTIONS) == 8
    with pytest.raises(InvalidArgumentError, match="show=.flops.: the sections are active, load"):
        runprof.render(run, show=["flops"])


def test_memory_rows_that_do_not_apply_are_one_line(run):
    text = runprof.render(run, show=["memory"], width=200)
    assert " -  " not in text  # no row of dashes
    assert text.count("not shown (") == 1


def test_gpu_memory_line():
    """A ledger with GPU figures says peak allocated (allocated after load + the run's peak above it) and NVML."""
    gib = 2**30
    rows = tuple(LedgerRow(name, b, "x") for name, b in (
        ("weights", 4 * gib), ("kv_cache", gib // 4), ("torch_allocated", 5 * gib), ("activations_peak", gib // 2),
        ("nvml_used", 6 * gib), ("nvml_peak", 7 * gib), ("nvml_device_total", 80 * gib)))
    r = dataclasses.replace(golden_run(), memory=MemoryLedger(rows), env=ENV)
    line = next(x for x in render_summary(r).splitlines() if x.startswith("memory"))
    assert line == ("memory: weights 4.00 GiB, KV 256.00 MiB; peak allocated 5.50 GiB (512.00 MiB above the "
                    "start); NVML: this process 6.00 GiB, peak 7.00 GiB of 80.00 GiB")
    hidden = MemoryLedger(rows[:4] + (LedgerRow("nvml_used", None, "nvml", reason=Cause.NVML_UNAVAILABLE,
                                                detail={"error": "no driver"}),))
    line = next(x for x in render_summary(dataclasses.replace(r, memory=hidden)).splitlines() if x.startswith("mem"))
    assert line.endswith("NVML: NVML unavailable (no driver)")


def test_reconcile_rows_that_are_not_equal_get_a_line(run):
    k1 = golden_run(new=3, memory=False)
    text = render_summary(k1, width=None)
    assert "memory: not measured" in text
    # 13 rows x 2 experts over 4 layers: some experts unused, so params touched < total
    assert any(x.startswith("params touched: ") and x.endswith(" of 2,823,296: some experts were never used in this "
                                                               "run") for x in text.splitlines()), text


def test_bench_summary_fits_100_columns():
    from runprof.routing.bench import bench

    loaded = runprof.load_model()
    ids = loaded.tokenizer("def f(x):\n    return x", return_tensors="pt")["input_ids"]
    r = bench(loaded.model, ids, top_ks=[1, 2, 4], batch_sizes=[1, 8], repeats=1, warmup=0, max_new_tokens=2,
              name="tiny-moe")
    text = runprof.render(r, width=100)
    assert _widest(text) <= 100
    assert "verdict: in every cell each token used exactly k experts" in " ".join(text.split())
    assert len(text.splitlines()) <= 20 and "routing at k=" not in text
    assert "routing at k=1" in runprof.render(r, full=True, width=100)
