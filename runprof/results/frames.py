"""Results as tables of records, for pandas (``result.to_dataframe(what)``) and CSV (``--csv DIR``).

Each table is a list of flat records (dicts of numbers, strings, booleans and None) in base units, one row
per observation (long format):

- a run (:class:`~runprof.results.TrackResult`): ``expert_load`` (layer, expert), ``layers`` (load statistics
  per MoE layer), ``steps`` (one row per forward call kept), ``memory`` (ledger rows; ``device`` is
  ``total`` or ``cuda:N``);
- a bench (:class:`~runprof.routing.bench.BenchResult`): ``runs`` (one row per top-k and batch size),
  ``layers`` (routing statistics per cell and MoE layer), ``expert_load`` (cell, layer, expert).

pandas is optional (``pip install runprof[frames]``); :func:`records` needs nothing.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from ..errors import InvalidArgumentError

Record = dict[str, Any]


def _load_stats(load: Sequence[int]) -> Record:
    """Statistics of one layer's per-expert assignments (None where there were none)."""
    e, total = len(load), sum(load)
    if not total:
        return {"max_share": None, "min_share": None, "max_over_mean": None, "cv": None, "entropy_normalized": None}
    mean = total / e
    shares = [x / total for x in load]
    std = math.sqrt(sum((x - mean) ** 2 for x in load) / e)
    entropy = -sum(s * math.log(s) for s in shares if s > 0) / math.log(e) if e > 1 else None
    return {"max_share": max(shares), "min_share": min(shares), "max_over_mean": max(load) / mean, "cv": std / mean,
            "entropy_normalized": entropy}


def run_tables(r: Any) -> dict[str, Callable[[], list[Record]]]:
    rt = r.runtime
    index = {x.name: x.layer_index for x in (r.moe.layers if r.moe is not None else ())}

    def expert_load() -> list[Record]:
        return [{"layer": name, "layer_index": index.get(name), "expert": e, "assignments": x,
                 "share": x / sum(load) if sum(load) else None, "uniform_share": 1 / len(load)}
                for name, load in zip(rt.moe_layer_names, rt.expert_load) for e, x in enumerate(load)]

    def layers() -> list[Record]:
        decode = [s for s in rt.steps if s.phase == "decode"]
        out = []
        for i, (name, load) in enumerate(zip(rt.moe_layer_names, rt.expert_load)):
            touched = [s.experts_touched[i] for s in decode if i < len(s.experts_touched)]
            out.append({"layer": name, "layer_index": index.get(name), "experts": len(load),
                        "assignments": sum(load), "unused_experts": sum(1 for x in load if not x),
                        "uniform_share": 1 / len(load), **_load_stats(load),
                        "decode_steps": len(touched),
                        "decode_distinct_mean": sum(touched) / len(touched) if touched else None})
        return out

    def steps() -> list[Record]:
        return [{"step": i, "phase": s.phase, "tokens": s.tokens,
                 "active_params_per_token_mean": s.active_params_per_token_mean, "params_touched": s.params_touched,
                 **{f"experts_touched:{name}": x for name, x in zip(rt.moe_layer_names, s.experts_touched)}}
                for i, s in enumerate(rt.steps)]

    def memory() -> list[Record]:
        if r.memory is None:
            return []
        ledgers = [("total", r.memory), *r.memory.devices.items()] if len(r.memory.devices) > 1 \
            else [("total", r.memory)]
        return [{"device": dev, "name": row.name, "bytes": row.bytes, "source": row.source, "part": row.part,
                 "cause": None if row.reason is None else row.reason.value}
                for dev, ledger in ledgers for row in ledger.rows]

    return {"expert_load": expert_load, "layers": layers, "steps": steps, "memory": memory}


_LAYER_SKIP = ("load", "load_share", "coactivation", "notes")


def bench_tables(r: Any) -> dict[str, Callable[[], list[Record]]]:
    def runs() -> list[Record]:
        out = []
        for run in r.runs:
            e, a = run.experts_per_token, run.active_params_per_token
            out.append({"top_k": run.top_k, "batch_size": run.batch_size, "top_k_measured": run.top_k_measured,
                        "experts_per_token_mean": e.mean, "experts_per_token_min": e.min,
                        "experts_per_token_max": e.max, "active_params_per_token_mean": a.mean,
                        "active_params_per_token_min": a.min, "active_params_per_token_max": a.max,
                        "static_active_params_per_token": run.static_active_params_per_token,
                        **{f"{what}_tokens_per_s_{s}": getattr(getattr(run, f"{what}_tokens_per_s"), s)
                           for what in ("prefill", "decode") for s in ("median", "min", "max")},
                        "prefill_tokens": run.tokens.get("prefill"), "decode_tokens": run.tokens.get("decode"),
                        "mean_logprob": run.score.mean_logprob})
        return out

    def layers() -> list[Record]:
        return [{"top_k": run.top_k, "batch_size": run.batch_size,
                 **{k: v for k, v in layer.to_dict().items() if k not in _LAYER_SKIP}}
                for run in r.runs for layer in run.routing.layers]

    def expert_load() -> list[Record]:
        return [{"top_k": run.top_k, "batch_size": run.batch_size, "layer": layer.name, "expert": e,
                 "assignments": x, "share": layer.load_share[e] if layer.load_share else None,
                 "uniform_share": layer.uniform_share}
                for run in r.runs for layer in run.routing.layers for e, x in enumerate(layer.load)]

    return {"runs": runs, "layers": layers, "expert_load": expert_load}


def tables(result: Any) -> dict[str, Callable[[], list[Record]]]:
    """The tables a result has, by name (each a function returning its records)."""
    if hasattr(result, "runtime") and hasattr(result, "reconcile"):
        return run_tables(result)
    if hasattr(result, "runs") and hasattr(result, "reference"):
        return bench_tables(result)
    raise InvalidArgumentError(f"{type(result).__name__} has no tables; runs and bench results have")


def records(result: Any, what: str) -> list[Record]:
    """The table ``what`` of ``result`` as a list of records (see the module docstring).

    >>> import runprof
    >>> loaded = runprof.load_model()
    >>> ids = loaded.tokenizer("def f(x):", return_tensors="pt")
    >>> with runprof.track(loaded.model) as t:
    ...     _ = loaded.model.generate(**ids, max_new_tokens=2, do_sample=False, pad_token_id=0)
    >>> rows = records(t.result, "expert_load")
    >>> len(rows), sum(row["assignments"] for row in rows if row["layer_index"] == 0) % 2  # 4 layers x 8; k=2
    (32, 0)
    """
    available = tables(result)
    if what not in available:
        raise InvalidArgumentError.bad("what", what, f"the tables of this result are {', '.join(available)}")
    return available[what]()


def to_dataframe(result: Any, what: str) -> Any:
    """The table ``what`` as a ``pandas.DataFrame`` (needs pandas: ``pip install runprof[frames]``)."""
    rows = records(result, what)
    try:
        import pandas as pd
    except ImportError as e:
        raise InvalidArgumentError(
            f"to_dataframe({what!r}) needs pandas: pip install 'runprof[frames]' (records() needs nothing)") from e
    return pd.DataFrame.from_records(rows, columns=list(rows[0]) if rows else None)


__all__ = ["Record", "bench_tables", "records", "run_tables", "tables", "to_dataframe"]
