"""Figures that scale: a 128-expert model (zoo) and the shipped one; no tick labels overlap (matplotlib's own
text extents), sizes as expected, no per-cell numbers past 16 experts, short names in titles, error bars said
and warned about, one bar at k = 1, --plot-format and --dpi."""
from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from runprof.cli import main
from runprof.errors import InvalidArgumentError
from runprof.models.loading import load_model
from runprof.renderers.plots import (
    bench_figures,
    figure_size_px,
    load_heatmap,
    overlapping_tick_labels,
    panel_size_in,
    plot_bench,
    short_name,
    throughput_warning,
)
from runprof.routing.bench import bench
from runprof.routing.timing import Spread

from .conftest import REPO
from .moe_zoo import tiny_model

matplotlib = pytest.importorskip("matplotlib")
PROMPT = REPO / "examples" / "prompt.txt"


@pytest.fixture(scope="module")
def shipped_bench():
    torch.set_num_threads(1)
    loaded = load_model(None, device="cpu")
    ids = loaded.tokenizer(PROMPT.read_text(encoding="utf-8"), return_tensors="pt")["input_ids"]
    return bench(loaded.model, ids, top_ks=[1, 2, 4], batch_sizes=(1, 2), repeats=2, warmup=0, max_new_tokens=3,
                 pad_token_id=loaded.tokenizer.pad_token_id, name=str(REPO / "runprof" / "models" / "tiny_moe"))


@pytest.fixture(scope="module")
def wide_bench():
    """Qwen3-MoE with 128 experts, top-8, 23 MoE layers (layer 0 is dense), random weights."""
    torch.set_num_threads(1)
    model = tiny_model("qwen3_moe", num_experts=128, num_experts_per_tok=8, num_hidden_layers=24)
    ids = torch.arange(3, 40).reshape(1, -1)
    return bench(model, ids, top_ks=[8, 128], repeats=1, warmup=0, max_new_tokens=3, name="/ckpt/org/qwen3-128e/")


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_128_experts_stay_readable(wide_bench, tmp_path):
    assert wide_bench.num_experts == 128 and len(wide_bench.runs[0].routing.layers) == 23
    figs = bench_figures(wide_bench)
    for name, fig in figs.items():
        assert overlapping_tick_labels(fig) == [], name
    load = figs["expert_load"]
    heat = [ax for ax in load.axes if ax.get_xlabel() == "expert"]
    assert len(heat) == 2 and _texts(load) == []  # no per-cell numbers past 16 experts
    ticks = heat[0].get_xticks()
    assert 4 <= len(ticks) <= 16 and list(ticks[:2]) == [0, ticks[1]] and ticks[1] in (8, 16, 32)  # thinned
    bar = [ax for ax in load.axes if "share of assignments (%)" in ax.get_ylabel()]
    assert len(bar) == 1 and "uniform 0.781%" in bar[0].get_ylabel()  # the colour bar, with units: 100/128 %
    assert load._suptitle.get_text() == "qwen3-128e: expert load per layer"  # the short name, not the path
    # 128 experts, 23 layers: panels of 4 + 128/64 = 6 in x (3.2 + 7 x 0.03 = 3.41) in; 2 at 100 dpi: 1200 x 341
    assert panel_size_in(128, 23) == (6.0, 3.41) and figure_size_px(wide_bench, "expert_load.png") == (1200, 341)
    paths = plot_bench(wide_bench, tmp_path, fmt="png", dpi=50)
    from PIL import Image

    with Image.open(paths[0]) as image:
        assert image.size == figure_size_px(wide_bench, "expert_load.png", dpi=50) == (600, 170)  # 50 dpi
    assert [p.name for p in paths] == ["expert_load.png", "repeat_rates.png", "throughput.png"]


def test_256_experts_and_many_layers():
    random.seed(0)
    rows = []
    for _ in range(94):
        x = [random.random() for _ in range(256)]
        rows.append([v / sum(x) for v in x])
    fig = load_heatmap([("top-k = 8", rows)], "qwen3-235b: expert load per layer")
    assert overlapping_tick_labels(fig) == [] and _texts(fig) == []
    w, h = panel_size_in(256, 94)  # 8 in wide (capped), taller for 94 layers: 3.2 + 78 x 0.03 = 5.54 in
    assert (w, h) == (8.0, 5.54) and tuple(fig.get_size_inches()) == (8.0, 5.54)
    assert all(len(ax.get_yticks()) <= 28 for ax in fig.axes[:1])


def test_shipped_model_figures(shipped_bench, tmp_path):
    r = shipped_bench
    figs = bench_figures(r)
    for name, fig in figs.items():
        assert overlapping_tick_labels(fig) == [], name
        assert fig._suptitle.get_text().startswith("tiny_moe")  # a path's last component
    # 8 experts x 4 layers: every cell has its share written, in each of the 3 panels
    assert len(_texts(figs["expert_load"])) == 3 * 32
    assert list(figs["expert_load"].axes[0].get_xticks()) == list(range(8))
    # k = 1: one bar per layer (the three rates are one); k = 2 and 4: three per layer
    bars = [len(ax.patches) for ax in figs["repeat_rates"].axes if ax.get_xlabel() == "MoE layer"]
    assert bars == [4, 12, 12]
    labels = [t.get_text() for t in figs["repeat_rates"].legends[0].get_texts()]
    assert labels[0] == "repeat (k = 1: first choice = any overlap = Jaccard)"
    pre, dec, params = figs["throughput"].axes[:3]
    assert pre.get_ylabel() == dec.get_ylabel() == "tokens/s" and params.get_ylabel() == "params (M)"
    assert pre.get_title() == "prefill (median; bars: min-max over 2 repeats)"
    size = figure_size_px(r, "expert_load.png")
    assert size == (1200, 320)  # three 4 x 3.2 in panels at 100 dpi
    for fmt, magic in (("svg", b"<?xml"), ("pdf", b"%PDF")):
        paths = plot_bench(r, tmp_path / fmt, fmt=fmt, dpi=72)
        assert [p.suffix for p in paths] == [f".{fmt}"] * 3 and paths[0].read_bytes()[:5].startswith(magic[:4])
    again = plot_bench(r, tmp_path / "again", fmt="svg", dpi=72)
    assert again[0].read_bytes() == (tmp_path / "svg" / "expert_load.svg").read_bytes()  # no date inside


def _with_spreads(r, spreads: dict[tuple[int, int], tuple[float, float, float]], repeats: int):
    runs = tuple(dataclasses.replace(run, decode_tokens_per_s=Spread(*spreads[(run.top_k, run.batch_size)]),
                                     prefill_tokens_per_s=Spread(*spreads[(run.top_k, run.batch_size)]))
                 if (run.top_k, run.batch_size) in spreads else run for run in r.runs)
    return dataclasses.replace(r, runs=runs, repeats=repeats)


def test_throughput_warning(shipped_bench):
    apart = {(1, 1): (100, 90, 110), (2, 1): (200, 190, 210), (4, 1): (300, 290, 310),
             (1, 2): (100, 90, 110), (2, 2): (200, 190, 210), (4, 2): (300, 290, 310)}
    assert throughput_warning(_with_spreads(shipped_bench, apart, 5)) is None
    close = {**apart, (2, 2): (120, 105, 130)}  # overlaps k=1's 90-110
    assert throughput_warning(_with_spreads(shipped_bench, close, 5)) == (
        "prefill, batch 2: the min-max ranges of k=1 and k=2 overlap over 5 repeats; more --repeats are needed "
        "to separate them")
    one = _with_spreads(shipped_bench, apart, 1)
    assert throughput_warning(one).startswith("1 repeat per cell: no spread to show")
    fig = bench_figures(one)["throughput"]
    assert fig.axes[0].get_title() == "prefill (1 repeat: no bars)" and "warning: 1 repeat" in fig._supxlabel.get_text()


def test_short_names():
    assert [short_name(x) for x in ("tiny-moe", "mixtral", "mistralai/Mixtral-8x7B-v0.1", "/a/b/model/",
                                    "/a/b/model/config.json", None)] == \
        ["tiny-moe", "mixtral", "Mixtral-8x7B-v0.1", "model", "model", "model"]


def test_plot_arguments(tmp_path, capsys):
    with pytest.raises(InvalidArgumentError, match="plot_format='jpg': expected one of png, svg, pdf"):
        plot_bench(None, tmp_path, fmt="jpg")
    with pytest.raises(InvalidArgumentError, match="dpi=5: expected an integer 10..1200"):
        plot_bench(None, tmp_path, dpi=5)
    assert main(["bench", "--prompt", str(PROMPT), "--top-k", "1", "--plot", str(tmp_path / "p"), "--dpi", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["runprof: error: --dpi 5: expected an integer 10..1200"] and not (tmp_path / "p").exists()


def test_bench_cli_html_and_svg(tmp_path, capsys):
    html, plots = tmp_path / "bench.html", tmp_path / "figs"
    assert main(["bench", "--prompt", str(PROMPT), "--top-k", "1,2", "--repeats", "1", "--warmup", "0",
                 "--max-new-tokens", "2", "--threads", "1", "--html", str(html), "--plot", str(plots),
                 "--plot-format", "svg"]) == 0
    capsys.readouterr()
    text = html.read_text(encoding="utf-8")
    for anchor in ("k1-b1", "k2-b1"):  # one section per top-k and batch size
        assert f'<section id="{anchor}"' in text
    assert text.count("<svg") == 3 and "1 repeat per cell: no spread to show" in text
    assert sorted(p.name for p in plots.iterdir()) == ["expert_load.svg", "repeat_rates.svg", "throughput.svg"]
