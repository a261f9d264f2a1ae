"""Beyond one device: results merged across ``torch.distributed`` ranks, and where a model's weights live.

``merge_across_ranks`` gives every rank ``TrackResult.combine(*every rank's result, parallel=True)``, the pure
merge defined in :mod:`runprof.results`, at the cost of two collectives whatever the model's size. This
module only packs the numbers that merge into two vectors and unpacks them:

1. one **MAX** all-reduce of a fixed-size float64 vector: wall time, measured k, the weights-changed flag,
   each statistic's ``-min`` and ``max`` (a minimum is the negated maximum of the negatives), and
   consistency checks packed as ``[x, -x]`` pairs (after MAX they agree on every rank iff every rank sent
   the same ``x``): the model's parameter count, a CRC of the MoE layout, a CRC of the unused modules. Its
   size does not depend on the model, so mismatched ranks are found and every rank raises the same
   :class:`TrackingError` before any size-dependent collective;
2. one **SUM** all-reduce of an int64 vector: tokens per phase, forward calls, the exact sum and count of
   every statistic (:class:`~runprof.results.Stat`) and every layer's expert load, flattened. Integers stay
   integers, so the merged loads, counts and means are exactly those of one process that saw every rank's
   tokens.

Only when ranks saw different modules run does a third collective (``all_gather_object`` of the unused
module names) intersect them. Per-step records, the memory ledger, the weight placement and the weights
diff stay per rank (``RANK_LOCAL``); each rank's own result keeps them (``Tracker.local_result``).
"""
from __future__ import annotations

import logging
import math
import os
import zlib
from typing import Any

import torch
from torch import nn

from ..errors import TrackingError
from ..results import (
    PHASES,
    RANK_LOCAL,
    Observation,
    RuntimeInfo,
    Stat,
    TokenCounts,
    TrackResult,
    combined_extra,
    touched_params,
)

log = logging.getLogger("runprof")

_HEAD = 3  # MAX vector: wall_s, measured k (-1 = none), weights changed (-1 = not verified)
_CHECKS = 3  # parameter count, MoE layout, unused modules


def merge_across_ranks(result: TrackResult, *, group: Any = None, device: torch.device | None = None) -> TrackResult:
    """One global result from every rank's result; a collective that every rank of ``group`` must call.

    Equal to ``TrackResult.combine(*results_of_every_rank, parallel=True)``. The vectors are reduced on
    ``device`` (NCCL needs the rank's own GPU: the tracked model's device when it is on CUDA, else the process
    group's bound device, else ``cuda:LOCAL_RANK``).

    >>> import torch.distributed as dist  # doctest: +SKIP
    >>> dist.init_process_group("gloo")  # under torchrun  # doctest: +SKIP
    >>> with runprof.track(model) as t:  # doctest: +SKIP
    ...     model.generate(my_share_of_prompts, max_new_tokens=8)
    >>> merged = t.result.merge_across_ranks()  # the same on every rank  # doctest: +SKIP
    """
    dist = _process_group_ready()
    device = collective_device(dist, group, device)
    rt = result.runtime
    maxed = torch.tensor(_max_vector(result), dtype=torch.float64, device=device)
    dist.all_reduce(maxed, op=dist.ReduceOp.MAX, group=group)
    mx = maxed.tolist()
    same_unused = _check_agreement(mx)
    summed = torch.tensor(_sum_vector(rt), dtype=torch.int64, device=device)
    dist.all_reduce(summed, op=dist.ReduceOp.SUM, group=group)
    unused = rt.unused_modules if same_unused else _unused_everywhere(dist, rt.unused_modules, group)
    extra = combined_extra((result,))
    if mx[2] >= 0:
        extra["weights_changed"] = bool(mx[2])
    extra["distributed"] = {
        "world_size": dist.get_world_size(group), "rank": dist.get_rank(group),
        "backend": str(dist.get_backend(group)), "rank_local": list(RANK_LOCAL),
    }
    return result.with_runtime(_merged_runtime(result, summed.tolist(), mx, unused), extra=extra)


def _process_group_ready() -> Any:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise TrackingError(
            "merge_across_ranks needs an initialized torch.distributed process group; call "
            "torch.distributed.init_process_group() first (torchrun sets its environment)"
        )
    return dist


def collective_device(dist: Any, group: Any, device: torch.device | None = None) -> torch.device:
    """Where the merge's tensors live: the CPU for gloo (and a mixed ``cpu:gloo,cuda:nccl`` group); for NCCL
    this rank's GPU: ``device`` when it is a CUDA device, else the group's bound device, else
    ``cuda:LOCAL_RANK``, else the current device (every rank on ``cuda:0`` is what NCCL must not get)."""
    backend = str(dist.get_backend(group)).lower()
    if "nccl" not in backend or "gloo" in backend:
        return torch.device("cpu")
    if device is not None and device.type == "cuda" and device.index is not None:
        return device
    pg = group if group is not None else dist.distributed_c10d._get_default_group()
    bound = getattr(pg, "bound_device_id", None)
    if isinstance(bound, torch.device) and bound.type == "cuda":
        return bound
    if "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device("cuda", torch.cuda.current_device())


def _crc(value: object) -> int:
    return zlib.crc32(repr(value).encode())


def _max_vector(r: TrackResult) -> list[float]:
    rt = r.runtime
    changed = r.extra.get("weights_changed")
    vec = [float(rt.wall_s), float(rt.top_k.get("measured") or -1), -1.0 if changed is None else float(changed)]
    for s in rt.stats():
        vec += [-math.inf, -math.inf] if s.min is None else [-float(s.min), float(s.max)]
    layout = (rt.moe_layer_names, tuple(len(load) for load in rt.expert_load),
              tuple(len(load) for load in rt.expert_load_computed), len(rt.stats()))
    for check in (r.params.total, _crc(layout), _crc(rt.unused_modules)):
        vec += [float(check), -float(check)]
    return vec


def _check_agreement(mx: list[float]) -> bool:
    """Raise on every rank alike if the ranks tracked different models; False if only unused modules differ."""
    pairs = mx[-2 * _CHECKS:]
    same = [pairs[2 * i] == -pairs[2 * i + 1] for i in range(_CHECKS)]
    if not all(same[:2]):
        raise TrackingError(
            "merge_across_ranks: the ranks tracked different models (parameter count or MoE layout differ); "
            "every rank must track the same model"
        )
    return same[2]


_COUNTS = ("prompt", "generated", "sequences")  # may be None: packed as (value, is-None)


def _sum_vector(rt: RuntimeInfo) -> list[int]:
    vec = [int(rt.tokens.get(p, 0)) for p in PHASES] + [rt.forward_calls]
    for s in rt.stats():
        vec += [int(s.total), int(s.count)]
    for load in (*rt.expert_load, *rt.expert_load_computed):
        vec += load
    c, o = rt.counts, rt.observation
    if c is None:
        vec += [0, 1] * len(_COUNTS) + [0] * (len(PHASES) + 3)
    else:
        for name in _COUNTS:
            value = getattr(c, name)
            vec += [0, 1] if value is None else [value, 0]
        vec += [c.rows.get(p, 0) for p in PHASES] + [c.padding_rows, c.finished_rows, c.generations]
    vec += [int(c is None), o.steps, o.steps_kept, o.missed_layer_steps, o.misaligned_layer_steps, o.recomputed_calls]
    return vec


def _unpack_counts(sm: list[int], rt: RuntimeInfo) -> tuple[TokenCounts | None, Observation]:
    pos = len(sm) - (2 * len(_COUNTS) + len(PHASES) + 3 + 6)
    vals = sm[pos:]
    opt = {name: (None if vals[2 * i + 1] else vals[2 * i]) for i, name in enumerate(_COUNTS)}
    rest = vals[2 * len(_COUNTS):]
    rows = dict(zip(PHASES, rest[:len(PHASES)]))
    padding, finished, generations = rest[len(PHASES):len(PHASES) + 3]
    none, steps, kept, missed, misaligned, recomputed = rest[len(PHASES) + 3:]
    cause = rt.counts.cause if rt.counts is not None else None
    counts = None if none else TokenCounts(opt["prompt"], opt["generated"], rows, padding, finished,
                                           opt["sequences"], generations, cause)
    o = rt.observation
    observation = Observation(o.compiled, o.trace, steps, kept, missed, misaligned, recomputed, o.notes)
    return counts, observation


def _unused_everywhere(dist: Any, unused: tuple[str, ...], group: Any) -> tuple[str, ...]:
    log.debug("ranks ran different modules: intersecting their unused modules (one all_gather_object)")
    everyone: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, list(unused), group=group)
    return tuple(name for name in unused if all(name in other for other in everyone))


def _merged_runtime(r: TrackResult, sm: list[int], mx: list[float], unused: tuple[str, ...]) -> RuntimeInfo:
    rt = r.runtime
    pos, stats = len(PHASES) + 1, []
    for i in range(len(rt.stats())):
        total, count = sm[pos], sm[pos + 1]
        pos += 2
        neg_min, high = mx[_HEAD + 2 * i], mx[_HEAD + 2 * i + 1]
        stats.append(Stat(total, count, int(-neg_min), int(high)) if count else Stat())
    loads, computed = [], []
    for target, source in ((loads, rt.expert_load), (computed, rt.expert_load_computed)):
        for load in source:
            target.append(tuple(sm[pos:pos + len(load)]))
            pos += len(load)
    counts, observation = _unpack_counts(sm, rt)
    measured = int(mx[1])
    return RuntimeInfo(
        tokens=dict(zip(PHASES, sm)),
        top_k={**rt.top_k, "measured": measured if measured >= 0 else None},
        expert_load=tuple(loads),
        params_touched=None if rt.params_touched is None else touched_params(r.static, tuple(loads)),
        steps=(),
        unused_modules=unused,
        moe_layer_names=rt.moe_layer_names,
        forward_calls=sm[len(PHASES)],
        wall_s=mx[0],
        counts=counts,
        observation=observation,
        expert_load_computed=tuple(computed),
        **rt.with_stats(stats),
    )


def placement(model: nn.Module) -> dict[str, int] | None:
    """Parameter bytes (numel x element size) per place: ``cpu``, ``cuda:N``, ``disk`` or ``meta``.

    Places come from accelerate's ``hf_device_map`` when the model has one (so weights offloaded to
    ``disk`` or ``cpu`` are reported as such, although their parameters sit on ``meta``), else from each
    parameter's device (``meta``: not resident, e.g. ``accelerate.cpu_offload`` loads them at each forward).
    None for a model wholly on one real device without a device map.

    >>> placement(nn.Linear(4, 4)) is None
    True
    >>> m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    >>> m.hf_device_map = {"0": "cpu", "1": "disk"}
    >>> placement(m)  # (16 + 4) x 4 bytes, (8 + 2) x 4 bytes
    {'cpu': 80, 'disk': 40}
    """
    device_map = getattr(model, "hf_device_map", None)
    places: dict[str, int] = {}
    for name, p in model.named_parameters():
        where = _mapped_place(name, device_map) if isinstance(device_map, dict) else None
        where = where or str(p.device)
        places[where] = places.get(where, 0) + p.numel() * p.element_size()
    if not isinstance(device_map, dict) and len(places) <= 1 and "meta" not in places:
        return None
    return places


def _mapped_place(name: str, device_map: dict[str, Any]) -> str | None:
    """The device-map entry of the longest module prefix of ``name`` ("" maps the whole model)."""
    best = max((k for k in device_map if k == "" or name == k or name.startswith(k + ".")), key=len, default=None)
    if best is None:
        return None
    where = device_map[best]
    if isinstance(where, int):  # accelerate's integer = index of the default accelerator
        acc = torch.accelerator.current_accelerator() if hasattr(torch, "accelerator") else None
        return f"{acc.type if acc is not None else 'cuda'}:{where}"
    return str(where)
