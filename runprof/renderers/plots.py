"""PNG figures of a bench result (matplotlib, an optional extra, imported only when a plot is drawn).

The only module that plots. Figures use matplotlib's object API (``Figure`` + Agg canvas), so no global
pyplot state or backend is touched; sizes are fixed (no tight bounding box) so a figure's pixel size is
its size in inches x ``DPI``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..routing.bench import BenchResult, BenchRun

DPI = 100
PANEL_IN = (4.0, 3.2)  # one panel per top-k: width, height in inches
THROUGHPUT_IN = (10.0, 3.6)
FILES = ("expert_load.png", "repeat_rates.png", "throughput.png")


def require_matplotlib() -> Any:
    """Import matplotlib or fail with one line saying how to install it."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as e:
        raise InvalidArgumentError("plots need matplotlib, which is not installed: pip install runprof[plot]") from e
    return matplotlib


def figure_size_px(result: BenchResult, file: str) -> tuple[int, int]:
    """(width, height) in pixels of figure ``file`` for ``result``.

    >>> figure_size_px.__name__
    'figure_size_px'
    """
    if file == "throughput.png":
        return int(THROUGHPUT_IN[0] * DPI), int(THROUGHPUT_IN[1] * DPI)
    panels = len(_per_k(result))
    return int(PANEL_IN[0] * panels * DPI), int(PANEL_IN[1] * DPI)


def _per_k(result: BenchResult) -> list[BenchRun]:
    """The first run of each top-k (its smallest listed batch size comes first in the plan)."""
    seen: dict[int, BenchRun] = {}
    for run in result.runs:
        seen.setdefault(run.top_k, run)
    return list(seen.values())


def _figure(width_in: float, height_in: float) -> Any:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_expert_load(result: BenchResult, path: str | Path) -> Path:
    """Heatmap per top-k: MoE layer x expert, share of assignments in % (uniform = 100/E)."""
    runs = _per_k(result)
    fig = _figure(PANEL_IN[0] * len(runs), PANEL_IN[1])
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    vmax = max(100 * max(layer.load_share) for run in runs for layer in run.routing.layers)
    image = None
    for ax, run in zip(axes, runs):
        data = [[100 * x for x in layer.load_share] for layer in run.routing.layers]
        image = ax.imshow(data, cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
        ax.set_title(f"top-k = {run.top_k} (uniform {100 / result.num_experts:.1f}%)", fontsize=9)
        ax.set_xlabel("expert", fontsize=8)
        ax.set_ylabel("MoE layer", fontsize=8)
        ax.set_xticks(range(result.num_experts))
        ax.set_yticks(range(len(data)))
        ax.tick_params(labelsize=7)
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if v < vmax / 2 else "black")
    fig.colorbar(image, ax=list(axes), label="share of assignments (%)", shrink=0.9)
    fig.suptitle(f"{result.model.name}: expert load per layer", fontsize=10)
    return _save(fig, path)


def plot_repeat_rates(result: BenchResult, path: str | Path) -> Path:
    """Per layer, consecutive-token repeat rates (first choice, any overlap, Jaccard) vs random (dashed)."""
    runs = _per_k(result)
    fig = _figure(PANEL_IN[0] * len(runs), PANEL_IN[1])
    axes = fig.subplots(1, len(runs), squeeze=False, sharey=True)[0]
    series = (("first choice", "first_choice_repeat", "first_choice_random", "tab:blue"),
              ("any overlap", "any_overlap_repeat", "any_overlap_random", "tab:orange"),
              ("Jaccard", "jaccard_repeat", "jaccard_random", "tab:green"))
    for ax, run in zip(axes, runs):
        layers = run.routing.layers
        xs = range(len(layers))
        for i, (label, field, base, color) in enumerate(series):
            values = [100 * (getattr(s, field) or 0.0) for s in layers]
            ax.bar([x + (i - 1) * 0.27 for x in xs], values, width=0.27, color=color, label=label)
            ax.hlines([100 * getattr(layers[0], base)], -0.5, len(layers) - 0.5, colors=color, linestyles="dashed",
                      linewidth=1)
        ax.set_title(f"top-k = {run.top_k}", fontsize=9)
        ax.set_xticks(list(xs))
        ax.set_xlabel("MoE layer", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("% of consecutive token pairs", fontsize=8)
    axes[0].legend(fontsize=7, loc="upper left", title="dashed: random routing", title_fontsize=7)
    fig.suptitle(f"{result.model.name}: routing locality vs random", fontsize=10)
    return _save(fig, path)


def plot_throughput(result: BenchResult, path: str | Path) -> Path:
    """Tokens/s (median, min-max bars) of prefill and decode vs k per batch size; active params vs k."""
    fig = _figure(*THROUGHPUT_IN)
    ax_pre, ax_dec, ax_params = fig.subplots(1, 3)
    for b in sorted({run.batch_size for run in result.runs}):
        runs = sorted((run for run in result.runs if run.batch_size == b), key=lambda run: run.top_k)
        ks = [run.top_k for run in runs]
        for ax, attr in ((ax_pre, "prefill_tokens_per_s"), (ax_dec, "decode_tokens_per_s")):
            spreads = [getattr(run, attr) for run in runs]
            med = [s.median or 0.0 for s in spreads]
            err = [[m - (s.min or m) for m, s in zip(med, spreads)], [(s.max or m) - m for m, s in zip(med, spreads)]]
            ax.errorbar(ks, med, yerr=err, marker="o", capsize=3, label=f"batch {b}")
    runs = sorted(_per_k(result), key=lambda run: run.top_k)
    ks = [run.top_k for run in runs]
    scale, unit = next((s, u) for s, u in ((1e9, "B"), (1e6, "M"), (1e3, "K"), (1, ""))
                       if max(run.static_active_params_per_token for run in runs) >= s)
    ax_params.plot(ks, [run.static_active_params_per_token / scale for run in runs], "k--", label="static")
    ax_params.plot(ks, [(run.active_params_per_token.mean or 0) / scale for run in runs], "o", color="tab:red",
                   label="measured")
    for ax, title in ((ax_pre, "prefill tokens/s"), (ax_dec, "decode tokens/s"),
                      (ax_params, f"active params per token ({unit})" if unit else "active params per token")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("top-k", fontsize=8)
        ax.set_xticks(ks)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(f"{result.model.name} on {result.model.device}: cost of top-k", fontsize=10)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, dpi=DPI, format="png")
    except OSError as e:
        raise InvalidArgumentError.bad("directory", str(target.parent),
                                       f"cannot write {target.name} ({e.strerror})") from e
    return target


def plot_bench(result: BenchResult, directory: str | Path) -> list[Path]:
    """Write the three figures (``FILES``) into ``directory``; return their paths."""
    d = Path(directory)
    return [plot_expert_load(result, d / FILES[0]), plot_repeat_rates(result, d / FILES[1]),
            plot_throughput(result, d / FILES[2])]


__all__ = ["DPI", "FILES", "figure_size_px", "plot_bench", "plot_expert_load", "plot_repeat_rates",
           "plot_throughput", "require_matplotlib"]
