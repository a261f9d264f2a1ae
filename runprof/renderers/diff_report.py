"""Two runs side by side (``python -m runprof diff A.json B.json``): what a change to k, the router or the
checkpoint did to experts and active params per token, speed, memory and each layer's expert load."""
from __future__ import annotations

from typing import Any, Callable

from ..results import MemoryLedger, TrackResult
from .format import human_bytes, n, rate, seconds, table, terminal_width, wrap


def _signed(x: float | int | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, int) or float(x).is_integer():
        return f"{int(x):+,}"
    return f"{x:+,.{digits}f}"


def _relative(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or a == 0 else f"{100 * (b - a) / a:+.1f}%"


def peak_memory(ledger: MemoryLedger | None) -> tuple[str, int | None]:
    """The run's peak memory figure and what it is: peak allocated on a GPU, else the process's peak RSS."""
    if ledger is None:
        return "not measured", None

    def get(name: str) -> int | None:
        return ledger.row(name).bytes if ledger.has(name) else None

    allocated, activations = get("torch_allocated"), get("activations_peak")
    if allocated is not None and activations is not None:
        return "peak allocated (GPU)", allocated + activations
    return "process RSS peak", get("process_rss_peak")


def _row(label: str, get: Callable[[TrackResult], Any], a: TrackResult, b: TrackResult,
         fmt: Callable[[Any], str] = n, change: str = "exact") -> list[str]:
    va, vb = get(a), get(b)
    if change == "exact":
        delta = "-" if va is None or vb is None else _signed(vb - va)
        if va not in (None, 0) and vb is not None and va != vb:
            delta += f" ({_relative(va, vb)})"
    elif change == "relative":
        delta = _relative(va, vb)
    else:
        delta = "" if va == vb else "changed"
    return [label, fmt(va), fmt(vb), delta]


def _k(r: TrackResult) -> str:
    k = r.runtime.top_k
    return f"{n(k['config'])} / {n(k['router'])} / {n(k['measured'])}"


def _lat(r: TrackResult, what: str) -> Any:
    lat = r.runtime.latency
    if lat is None:
        return None
    value = getattr(lat, what)
    return value.median if hasattr(value, "median") else value


def render_diff(a: TrackResult, b: TrackResult, *, full: bool = False, width: int | None = None,
                names: tuple[str, str] = ("A", "B")) -> str:
    """``b`` against ``a``: one table of figures with their exact change, then each layer's expert-load
    shares (the largest move per layer; every expert with ``full``)."""
    width = terminal_width() if width is None else width
    out = [piece for label, r, name in (("A", a, names[0]), ("B", b, names[1]))
           for piece in wrap(f"{label}: {name} ({r.model.name}, {r.model.class_name}, {r.model.dtype}, on "
                             f"{r.model.device})", width)]
    mem_label = peak_memory(a.memory)[0]
    rows = [
        _row("top-k (config / router / measured)", _k, a, b, str, change="same"),
        _row("experts per token per MoE layer", lambda r: r.runtime.experts_per_token.mean, a, b),
        _row("active params per token (all), measured", lambda r: r.runtime.active_params_per_token["all"].mean, a, b),
        _row("active params per token (all), static", lambda r: r.params.active_per_token["all"], a, b),
        _row("params touched in the run", lambda r: r.runtime.params_touched, a, b),
        _row("prompt tokens", lambda r: None if r.runtime.counts is None else r.runtime.counts.prompt, a, b),
        _row("generated tokens", lambda r: None if r.runtime.counts is None else r.runtime.counts.generated, a, b),
        _row("time to first token", lambda r: _lat(r, "ttft_s"), a, b, seconds, change="relative"),
        _row("decode tokens/s", lambda r: _lat(r, "decode_tokens_per_s"), a, b, rate, change="relative"),
        _row("prefill tokens/s", lambda r: _lat(r, "prefill_tokens_per_s"), a, b, rate, change="relative"),
        _row(f"memory: {mem_label}", lambda r: peak_memory(r.memory)[1], a, b, human_bytes, change="relative"),
    ]
    out += ["", table(rows, ["", "A", "B", "B - A"], ("left", "right", "right", "right"), width=width,
                      wrap_cols=(0,))]
    out += ["", render_load_diff(a, b, full=full, width=width)]
    return "\n".join(out)


def _shares(load: tuple[int, ...]) -> list[float]:
    total = sum(load)
    return [x / total if total else 0.0 for x in load]


def render_load_diff(a: TrackResult, b: TrackResult, *, full: bool = False, width: int | None = None) -> str:
    """Per MoE layer: the most loaded expert in each run, the largest change of one expert's share (percentage
    points) and the total variation distance ½ Σ |share_B − share_A|; with ``full`` every expert."""
    la, lb = a.runtime.expert_load, b.runtime.expert_load
    if not la or not lb or a.runtime.moe_layer_names != b.runtime.moe_layer_names or \
            [len(x) for x in la] != [len(x) for x in lb]:
        return "\n".join(wrap("expert load: not compared (the runs do not have the same MoE layers and experts, or "
                              "one captured no routing)", width))
    rows, every = [], []
    for name, x, y in zip(a.runtime.moe_layer_names, la, lb):
        sa, sb = _shares(x), _shares(y)
        d = [q - p for p, q in zip(sa, sb)]
        big = max(range(len(d)), key=lambda e: abs(d[e]))
        ma, mb = max(range(len(sa)), key=sa.__getitem__), max(range(len(sb)), key=sb.__getitem__)
        rows.append([name, f"{100 * sa[ma]:.1f} (e{ma})", f"{100 * sb[mb]:.1f} (e{mb})", f"e{big} {100 * d[big]:+.1f}",
                     f"{50 * sum(abs(v) for v in d):.1f}"])
        every += [[name, f"e{e}", f"{100 * p:.1f}", f"{100 * q:.1f}", f"{100 * (q - p):+.1f}"]
                  for e, (p, q) in enumerate(zip(sa, sb))]
    out = [table(rows, ["expert load share %", "A max", "B max", "largest\nmove (pp)", "total\nvariation (pp)"],
                 ("left", "right", "right", "right", "right"), width=width, wrap_cols=(0,))]
    if full:
        out += ["", table(every, ["layer", "expert", "A %", "B %", "B - A (pp)"],
                          ("left", "left", "right", "right", "right"), width=width, wrap_cols=(0,))]
    out += wrap(f"uniform share {100 / len(la[0]):.1f}%; pp = percentage points; total variation = ½ Σ |B − A| over "
                "the layer's experts", width)
    return "\n".join(out)


__all__ = ["peak_memory", "render_diff", "render_load_diff"]
