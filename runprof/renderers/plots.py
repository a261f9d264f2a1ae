"""Figures of bench and run results (matplotlib, an optional extra, imported only when a figure is drawn).

The only module that plots. Figures use matplotlib's object API (``Figure`` + Agg canvas), so no global
pyplot state or backend is touched; sizes are fixed (no tight bounding box) so a figure's pixel size is
its size in inches x ``dpi``. Figures scale with the model: heatmap panels widen past 32 experts and grow
taller past 16 layers, per-cell numbers are written only up to 16 experts, and tick labels are thinned
(every 2nd, 4th, ... kept) until none overlap.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from ..errors import InvalidArgumentError
from ..routing.bench import BenchResult, BenchRun

DPI = 100
FORMATS = ("png", "svg", "pdf")
PANEL_IN = (4.0, 3.2)  # one panel per top-k, up to 32 experts and 16 layers: width, height in inches
THROUGHPUT_IN = (10.0, 3.6)
ROOFLINE_IN = (7.0, 4.2)
NAMES = ("expert_load", "repeat_rates", "throughput")
FILES = tuple(f"{name}.png" for name in NAMES)
CELL_NUMBERS_MAX = 16  # experts (and layers) up to which each heatmap cell shows its share
SERIES = (("first choice", "first_choice_repeat", "first_choice_random", "tab:blue"),
          ("any overlap", "any_overlap_repeat", "any_overlap_random", "tab:orange"),
          ("Jaccard", "jaccard_repeat", "jaccard_random", "tab:green"))


def require_matplotlib() -> Any:
    """Import matplotlib or fail with one line saying how to install it."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as e:
        raise InvalidArgumentError("plots need matplotlib, which is not installed: pip install runprof[plot]") from e
    return matplotlib


def short_name(name: str | None) -> str:
    """The model's name for a title: an alias as it is, a path or hub id as its last component.

    >>> short_name("mixtral"), short_name("/data/ckpt/my-moe/"), short_name("Qwen/Qwen3-30B-A3B")
    ('mixtral', 'my-moe', 'Qwen3-30B-A3B')
    >>> short_name("/data/ckpt/my-moe/config.json")
    'my-moe'
    """
    from ..models.resolve import ALIASES, DEFAULT_MODEL

    text = str(name or "model").rstrip("/\\")
    if text in ALIASES or text == DEFAULT_MODEL:
        return text
    path = Path(text)
    if path.suffix == ".json" and path.parent.name:
        path = path.parent
    return path.name or text


def check_plot_args(fmt: str, dpi: int) -> None:
    """``fmt`` one of :data:`FORMATS`, ``dpi`` 10..1200 (an :class:`InvalidArgumentError` naming each)."""
    if fmt not in FORMATS:
        raise InvalidArgumentError.bad("plot_format", fmt, f"expected one of {', '.join(FORMATS)}")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 10 <= dpi <= 1200:
        raise InvalidArgumentError.bad("dpi", dpi, "expected an integer 10..1200")


def panel_size_in(num_experts: int, num_layers: int) -> tuple[float, float]:
    """Width and height in inches of one heatmap or repeat-rate panel.

    >>> panel_size_in(8, 4), panel_size_in(128, 48), panel_size_in(256, 94)
    ((4.0, 3.2), (6.0, 4.16), (8.0, 5.54))
    """
    width = PANEL_IN[0] if num_experts <= 32 else min(8.0, PANEL_IN[0] + num_experts / 64)
    height = min(6.0, PANEL_IN[1] + max(0, num_layers - 16) * 0.03)
    return width, round(height, 2)


def figure_size_px(result: BenchResult, file: str, dpi: int = DPI) -> tuple[int, int]:
    """(width, height) in pixels of figure ``file`` (``expert_load.png``, ...) for ``result``."""
    if file.startswith("throughput"):
        return int(THROUGHPUT_IN[0] * dpi), int(THROUGHPUT_IN[1] * dpi)
    w, h = panel_size_in(result.num_experts, len(result.runs[0].routing.layers))
    return int(w * len(_per_k(result)) * dpi), int(h * dpi)


def _per_k(result: BenchResult) -> list[BenchRun]:
    """The first run of each top-k (its smallest listed batch size comes first in the plan)."""
    seen: dict[int, BenchRun] = {}
    for run in result.runs:
        seen.setdefault(run.top_k, run)
    return list(seen.values())


def new_figure(width_in: float, height_in: float, dpi: int = DPI) -> Any:
    """A constrained-layout ``Figure`` on its own Agg canvas (no pyplot)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def load_heatmap(panels: Sequence[tuple[str, Sequence[Sequence[float]]]], title: str, *, dpi: int = DPI) -> Any:
    """Heatmap panels (title, ``shares[layer][expert]`` as fractions) side by side, one colour scale in %."""
    num_experts = max(len(row) for _, rows in panels for row in rows)
    layers = max(len(rows) for _, rows in panels)
    w, h = panel_size_in(num_experts, layers)
    fig = new_figure(w * len(panels), h, dpi)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    vmax = max((100 * x for _, rows in panels for row in rows for x in row), default=1.0) or 1.0
    image = None
    for ax, (label, rows) in zip(axes, panels):
        data = [[100 * x for x in row] for row in rows]
        image = ax.imshow(data, cmap="viridis", vmin=0, vmax=vmax, aspect="auto", interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("expert", fontsize=8)
        ax.set_ylabel("MoE layer", fontsize=8)
        ax.set_xticks(range(0, num_experts, tick_step(num_experts, int(w * 4))))
        ax.set_yticks(range(0, len(data), tick_step(len(data), int(h * 5))))
        ax.tick_params(labelsize=7)
        if num_experts <= CELL_NUMBERS_MAX and len(data) <= CELL_NUMBERS_MAX:
            for i, row in enumerate(data):
                for j, v in enumerate(row):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if v < vmax / 2 else "black")
    bar = fig.colorbar(image, ax=list(axes), shrink=0.9)
    bar.set_label(f"share of assignments (%); line: uniform {100 / num_experts:.3g}%", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    bar.ax.axhline(100 / num_experts, color="white", linewidth=1.5)
    bar.ax.axhline(100 / num_experts, color="black", linewidth=0.6, linestyle="dashed")
    fig.suptitle(title, fontsize=10)
    return thin_ticks(fig)


def repeat_bars(panels: Sequence[tuple[str, int, Sequence[Any]]], title: str, *, dpi: int = DPI) -> Any:
    """Per layer, consecutive-token repeat rates vs random routing (dashed), one panel per (title, k, layers).

    Each layer has ``first_choice_repeat``, ``any_overlap_repeat``, ``jaccard_repeat`` (fractions or None) and
    their ``*_random`` baselines. At k = 1 the three rates are one number, drawn as one bar.
    """
    layers = max(len(ls) for _, _, ls in panels)
    w, h = panel_size_in(0, layers)
    fig = new_figure(w * len(panels), h, dpi)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    handles: dict[str, Any] = {}
    for ax, (label, k, stats) in zip(axes, panels):
        series = SERIES if k > 1 else (("repeat (k = 1: first choice = any overlap = Jaccard)",) + SERIES[0][1:],)
        width = 0.8 / len(series)
        for i, (name, attr, base, color) in enumerate(series):
            xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(stats))]
            values = [100 * (getattr(s, attr) or 0.0) for s in stats]
            handles[name] = ax.bar(xs, values, width=width, color=color, label=name)
            ax.hlines([100 * getattr(stats[0], base)], -0.5, len(stats) - 0.5, colors=color, linestyles="dashed",
                      linewidth=1)
        ax.set_title(label, fontsize=9)
        ax.set_xticks(range(0, len(stats), tick_step(len(stats), int(w * 5))))
        ax.set_xlabel("MoE layer", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("% of consecutive token pairs", fontsize=8)
    fig.legend(list(handles.values()), list(handles), fontsize=7, loc="outside lower center",
               ncols=min(len(handles), 3), title="bars: measured; dashed: random routing", title_fontsize=7)
    fig.suptitle(title, fontsize=10)
    return thin_ticks(fig)


def _spread_errors(runs: list[BenchRun], attr: str) -> tuple[list[float], list[list[float]]]:
    spreads = [getattr(run, attr) for run in runs]
    med = [s.median or 0.0 for s in spreads]
    return med, [[m - (s.min if s.min is not None else m) for m, s in zip(med, spreads)],
                 [(s.max if s.max is not None else m) - m for m, s in zip(med, spreads)]]


def throughput_warning(result: BenchResult) -> str | None:
    """Why the throughput bars cannot be told apart, or None: one repeat (no spread), or min-max ranges of
    neighbouring k that overlap (the difference is within run-to-run noise at this many repeats)."""
    if result.repeats < 2:
        return f"{result.repeats} repeat per cell: no spread to show; rerun with --repeats 5 or more"
    for b in sorted({run.batch_size for run in result.runs}):
        runs = sorted((run for run in result.runs if run.batch_size == b), key=lambda run: run.top_k)
        for phase, attr in (("prefill", "prefill_tokens_per_s"), ("decode", "decode_tokens_per_s")):
            for lo, hi in zip(runs, runs[1:]):
                a, c = getattr(lo, attr), getattr(hi, attr)
                if None not in (a.min, a.max, c.min, c.max) and a.min <= c.max and c.min <= a.max:
                    return (f"{phase}, batch {b}: the min-max ranges of k={lo.top_k} and k={hi.top_k} overlap over "
                            f"{result.repeats} repeats; more --repeats are needed to separate them")
    return None


def throughput_figure(result: BenchResult, *, dpi: int = DPI) -> Any:
    """Tokens/s (median, min-max bars over the repeats) of prefill and decode vs k per batch size; active params
    per token vs k (static and measured)."""
    fig = new_figure(*THROUGHPUT_IN, dpi=dpi)
    ax_pre, ax_dec, ax_params = fig.subplots(1, 3)
    ks = sorted({run.top_k for run in result.runs})
    for b in sorted({run.batch_size for run in result.runs}):
        runs = sorted((run for run in result.runs if run.batch_size == b), key=lambda run: run.top_k)
        for ax, attr in ((ax_pre, "prefill_tokens_per_s"), (ax_dec, "decode_tokens_per_s")):
            med, err = _spread_errors(runs, attr)
            ax.errorbar([run.top_k for run in runs], med, yerr=err if result.repeats > 1 else None, marker="o",
                        capsize=3, label=f"batch {b}")
    runs = sorted(_per_k(result), key=lambda run: run.top_k)
    scale, unit = next((s, u) for s, u in ((1e9, "B"), (1e6, "M"), (1e3, "K"), (1, ""))
                       if max(run.static_active_params_per_token for run in runs) >= s)
    ax_params.plot(ks, [run.static_active_params_per_token / scale for run in runs], "k--", label="static")
    ax_params.plot(ks, [(run.active_params_per_token.mean or 0) / scale for run in runs], "o", color="tab:red",
                   label="measured")
    bars = f"median; bars: min-max over {result.repeats} repeats" if result.repeats > 1 else "1 repeat: no bars"
    for ax, label, ylabel in ((ax_pre, "prefill", "tokens/s"), (ax_dec, "decode", "tokens/s"),
                              (ax_params, "active params per token", f"params ({unit})" if unit else "params")):
        ax.set_title(f"{label} ({bars})" if ax is not ax_params else label, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_xlabel("top-k", fontsize=8)
        if ks[-1] >= 8 * ks[0]:
            ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    warning = throughput_warning(result)
    fig.suptitle(f"{short_name(result.model.name)} on {result.model.device}: cost of top-k", fontsize=10)
    if warning:
        fig.supxlabel(f"warning: {warning}", fontsize=8, color="tab:red")
    return thin_ticks(fig)


def roofline_points(labelled: Sequence[tuple[str, Any]]) -> list[tuple[str, str, float, float]]:
    """(label, phase, FLOPs per byte, FLOP/s) of every prefill and decode whose rates were measured, from
    ``(label, UtilizationInfo)`` pairs (a run's ``runtime.utilization``)."""
    return [(label, ph, u.intensity[ph], u.flops_per_s[ph]) for label, u in labelled if u is not None
            for ph in ("prefill", "decode") if u.intensity.get(ph) and u.flops_per_s.get(ph)]


def roofline_figure(points: Sequence[tuple[str, str, float, float]], *, peak_flops_per_s: float | None,
                    peak_bytes_per_s: float | None, title: str, dpi: int = DPI) -> Any:
    """Achieved FLOP/s against arithmetic intensity (FLOPs per byte moved), log-log, one marker per point
    (circle: prefill, square: decode); the bandwidth roof (peak B/s x intensity) and the compute roof (peak
    FLOP/s) drawn when the device's peaks are known, their ridge where they meet."""
    fig = new_figure(*ROOFLINE_IN, dpi=dpi)
    ax = fig.subplots()
    xs = [p[2] for p in points] or [1.0]
    lo, hi = min(xs) / 4, max(xs) * 4
    if peak_bytes_per_s and peak_flops_per_s:
        ridge = peak_flops_per_s / peak_bytes_per_s
        lo, hi = min(lo, ridge / 4), max(hi, ridge * 4)
        ax.plot([lo, ridge, hi], [peak_bytes_per_s * lo, peak_flops_per_s, peak_flops_per_s], "k-", lw=1,
                label=f"roofs: {peak_flops_per_s / 1e12:.4g} TFLOP/s, {peak_bytes_per_s / 1e12:.3g} TB/s")
        ax.axvline(ridge, color="0.6", ls=":", lw=1)
    for i, (label, phase, x, y) in enumerate(points):
        ax.plot([x], [y], "o" if phase == "prefill" else "s", color=f"C{i // 2 % 10}", label=f"{phase} {label}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("arithmetic intensity (FLOPs per byte moved)", fontsize=8)
    ax.set_ylabel("achieved FLOP/s", fontsize=8)
    ax.tick_params(labelsize=7)
    if len(points) > 8:
        fig.legend(fontsize=6, loc="outside right upper")
    else:
        ax.legend(fontsize=6)
    if not (peak_bytes_per_s and peak_flops_per_s):
        ax.set_title("no roofs: the device's peaks are unknown (track(peak_flops=..., peak_bandwidth=...))",
                     fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def bench_roofline(result: BenchResult, *, dpi: int = DPI) -> Any | None:
    """The roofline of a bench whose runs carry their ``utilization`` (None when none does)."""
    labelled = [(f"k={run.top_k} b={run.batch_size}", getattr(run, "utilization", None)) for run in result.runs]
    points = roofline_points(labelled)
    if not points:
        return None
    u = next(u for _, u in labelled if u is not None)
    return roofline_figure(points, peak_flops_per_s=u.peak_flops_per_s, peak_bytes_per_s=u.peak_bytes_per_s,
                           title=f"{short_name(result.model.name)} on {u.device_name or result.model.device}: "
                                 "roofline", dpi=dpi)


def bench_figures(result: BenchResult, *, dpi: int = DPI) -> dict[str, Any]:
    """The figures of a bench, by name (:data:`NAMES`, and ``roofline`` when its runs carry utilization)."""
    runs, name = _per_k(result), short_name(result.model.name)
    load = [(f"top-k = {run.top_k}, batch {run.batch_size}", [layer.load_share for layer in run.routing.layers])
            for run in runs]
    repeats = [(f"top-k = {run.top_k}, batch {run.batch_size}", run.top_k, run.routing.layers) for run in runs]
    return {"expert_load": load_heatmap(load, f"{name}: expert load per layer", dpi=dpi),
            "repeat_rates": repeat_bars(repeats, f"{name}: consecutive-token expert repeats vs random routing",
                                        dpi=dpi),
            "throughput": throughput_figure(result, dpi=dpi),
            **({"roofline": roof} if (roof := bench_roofline(result, dpi=dpi)) is not None else {})}


def tick_step(n: int, most: int) -> int:
    """The smallest power of 2 that leaves at most ``most`` of ``n`` ticks (where to start thinning).

    >>> tick_step(8, 16), tick_step(128, 16), tick_step(256, 32)
    (1, 8, 8)
    """
    step = 1
    while n > step * max(most, 1):
        step *= 2
    return step


def _tick_labels(axis: Any, renderer: Any) -> list[Any]:
    return [t.get_window_extent(renderer) for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]


def overlapping_tick_labels(fig: Any) -> list[tuple[str, str]]:
    """Pairs of tick labels (axes title or index, label texts) whose drawn extents overlap, after layout."""
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    found = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
            boxes = [t.get_window_extent(renderer) for t in labels]
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    if boxes[i].overlaps(boxes[j]):
                        found.append((labels[i].get_text(), labels[j].get_text()))
    return found


def thin_ticks(fig: Any) -> Any:
    """Keep every 2nd, 4th, ... tick of an axis (and its label) until no two labels overlap; returns ``fig``."""
    for _ in range(8):
        fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()
        changed = False
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                boxes = _tick_labels(axis, renderer)
                if any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])):
                    locs, labels = axis.get_majorticklocs(), [t.get_text() for t in axis.get_ticklabels()]
                    axis.set_ticks(locs[::2], labels[::2] if all(labels) else None)
                    changed = True
        if not changed:
            break
    return fig


def save_figure(fig: Any, path: str | Path, fmt: str = "png", dpi: int = DPI) -> Path:
    """Write ``fig`` to ``path`` (folders created); an unwritable place is one line naming the folder."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        from matplotlib import rc_context

        with rc_context({"svg.hashsalt": "runprof"}):  # fixed SVG ids: the same figure, the same bytes
            fig.savefig(target, dpi=dpi, format=fmt, metadata=_METADATA.get(fmt))
    except OSError as e:
        raise InvalidArgumentError.bad("directory", str(target.parent),
                                       f"cannot write {target.name} ({e.strerror})") from e
    return target


_METADATA = {"svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None}}


def figure_svg(fig: Any) -> str:
    """``fig`` as an inline ``<svg>`` element (text as text, no date, fixed ids): the same figure gives the
    same bytes."""
    from matplotlib import rc_context

    buf = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "runprof"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def plot_bench(result: BenchResult, directory: str | Path, *, fmt: str = "png", dpi: int = DPI) -> list[Path]:
    """Write the figures (:data:`NAMES`, and the roofline when the runs carry utilization; ``fmt`` files at ``dpi``)
    into ``directory``; return their paths.

    >>> plot_bench.__name__
    'plot_bench'
    """
    check_plot_args(fmt, dpi)
    d = Path(directory)
    return [save_figure(fig, d / f"{name}.{fmt}", fmt, dpi) for name, fig in bench_figures(result, dpi=dpi).items()]


__all__ = ["DPI", "FILES", "FORMATS", "NAMES", "bench_figures", "bench_roofline", "roofline_figure",
           "roofline_points", "check_plot_args", "figure_size_px", "figure_svg",
           "load_heatmap", "new_figure", "overlapping_tick_labels", "panel_size_in", "plot_bench", "repeat_bars",
           "require_matplotlib", "save_figure", "short_name", "thin_ticks", "throughput_figure",
           "throughput_warning"]
