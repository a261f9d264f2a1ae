"""The capture of one tracked region: staging and counters on the devices, filled by the hooks, reduced a chunk
of steps at a time by the eager step hook (see :mod:`runprof.tracking.counters`).

Two hook modes share it. In eager mode a routing hook does one device op (copy the ids into the staging rows of
the current step) and keeps its bookkeeping in Python. Under ``torch.compile`` the routing hooks are traced into
the graph, so they touch no Python state: a device cursor says where the step's rows start, and device counters
say whether every layer saw every step (the Python step hook on the top module always runs eagerly).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch

from .counters import BIG, PHASES, ChunkRows, LayerGroup, _normal_tensors

_HALF = (torch.bfloat16, torch.float16)


@dataclass
class CaptureOptions:
    trace: bool = False  # keep every token's ids (doubling device buffers, one copy to the CPU at stop)
    weights: bool = False  # keep the routers' weights too (router weight sums; the trace's weights)
    coactivation: bool = False  # [E, E] pair counts per layer
    compiled: bool = False  # device-only hooks
    max_steps: int = 10_000  # per-step records kept; later steps are aggregated only
    rows: int = 256  # initial staging rows (grows by doubling)
    chunk_steps: int = 64  # steps reduced together


@dataclass
class EagerChecks:
    """Eager-mode bookkeeping of the routing hooks (rows per layer this step; over the run: missed and
    misaligned steps, calls during backward recomputation, the widest k)."""

    rows_now: list[int]
    missed: list[int]
    misaligned: list[int]
    recomputed: list[int]
    kmax: list[int]


@dataclass
class Trace:
    """Every row's ids (per group), and per row its real mask, global step and position in the step."""

    ids: list[torch.Tensor] = field(default_factory=list)
    weights: list[torch.Tensor | None] = field(default_factory=list)
    real: torch.Tensor | None = None
    step: torch.Tensor | None = None
    position: torch.Tensor | None = None
    used: int = 0


class Capture:
    """Staging, counters and (optionally) the trace of one region, for ``layers`` (ppe: params per expert)."""

    @_normal_tensors
    def __init__(self, names: list[str], devices: list[torch.device], num_experts: list[int], ppe: list[int],
                 k: int, main: torch.device, base_params: int, options: CaptureOptions) -> None:
        self.options, self.main, self.base = options, main, base_params
        self.names, self.num_experts, self.ppe = list(names), list(num_experts), list(ppe)
        self.where: list[tuple[LayerGroup, int]] = []
        self.groups: list[LayerGroup] = []
        by_device: dict[str, list[int]] = {}
        for i, dev in enumerate(devices):
            by_device.setdefault(str(dev), []).append(i)
        for dev, idx in by_device.items():
            g = LayerGroup(torch.device(dev), idx, [num_experts[i] for i in idx], [ppe[i] for i in idx],
                           options.rows, max(k, 1), weights=options.weights, coactivation=options.coactivation)
            self.groups.append(g)
        self.where = [(g, g.layers.index(i)) for i in range(len(devices)) for g in self.groups if i in g.layers]
        n = len(devices)
        self.checks = EagerChecks([0] * n, [0] * n, [0] * n, [0] * n, [0] * n)
        rows, p = options.rows, len(PHASES)
        self.mask = torch.ones(rows, dtype=torch.bool, device=main)
        self.meta = torch.zeros(3, rows, dtype=torch.long, device=main)  # step in chunk, phase, position
        self.stats = torch.tensor([[0, 0, BIG, -BIG]] * p, dtype=torch.long, device=main)
        self.tokens = torch.zeros(p, dtype=torch.long, device=main)
        self.generated = torch.zeros((), dtype=torch.long, device=main)
        self.finished = torch.zeros((), dtype=torch.long, device=main)
        self.steps = torch.zeros(0, 3 + n, dtype=torch.long, device=main)  # tokens, active sum, count, touched
        self.chunk = ChunkRows([])
        self.n_steps = 0
        self._step_rows = 0  # rows of the step in progress
        self._cur = 0  # its first row in the staging buffers
        self.trace = Trace() if options.trace else None
        self.implicit: Callable[[int], None] | None = None  # opens a step when routing runs without one
        self.enabled = True  # watch(sample_every=N): the routing hooks skip records that are not sampled
        self._held: list[list[tuple[int, torch.Tensor, torch.Tensor | None]]] = [[] for _ in names]

    # --- eager side: the step hook ---------------------------------------------------------------------------
    def begin_step(self, phase: str, rows: int, mask: torch.Tensor | None) -> None:
        """A forward call starts: close the previous step, make room for ``rows`` rows, stage their mask."""
        self._close_step()
        chunk = self.chunk
        if chunk.used + rows > self.mask.numel() or len(chunk.steps) >= self.options.chunk_steps:
            self.flush()
        if rows > self.mask.numel():
            self._grow(rows)
        chunk = self.chunk  # a flush started a new chunk
        c = chunk.used
        self._cur, self._step_rows = c, rows
        if mask is None:
            self.mask[c:c + rows].fill_(True)
        else:
            self.mask[c:c + rows].copy_(mask.reshape(-1))
        p = PHASES.index(phase)
        self.meta[0, c:c + rows].fill_(len(chunk.steps))
        self.meta[1, c:c + rows].fill_(p)
        if self.trace is not None:  # the position of each row inside its step: only the trace keeps it
            self.meta[2, c:c + rows].copy_(torch.arange(rows, device=self.main))
        if self.options.compiled:
            for g in self.groups:
                g.cursor.fill_(c)
        chunk.steps.append((self.n_steps, p, c, rows))
        chunk.used += rows
        self.n_steps += 1

    def _close_step(self) -> None:
        if not self.chunk.steps:
            return
        if self.options.compiled:
            for g in self.groups:
                g.end_step(self._step_rows)
            return
        ch = self.checks
        for i, seen in enumerate(ch.rows_now):
            if seen == 0:
                ch.missed[i] += 1
            elif seen != self._step_rows:
                ch.misaligned[i] += 1
            ch.rows_now[i] = 0

    @_normal_tensors
    def _grow(self, rows: int) -> None:
        size = max(rows, 2 * self.mask.numel())
        self.mask = torch.ones(size, dtype=torch.bool, device=self.main)
        self.meta = torch.zeros(3, size, dtype=torch.long, device=self.main)
        for g in self.groups:
            g.grow(size, g.k)

    # --- the routing hooks -------------------------------------------------------------------------------------
    def record(self, layer: int, ids: torch.Tensor, weights: torch.Tensor | None) -> None:
        """Eager mode: keep a reference to this call's ids (no device op); the chunk reduction copies them into
        the staging rows (a chunk holds at most ``chunk_steps`` steps, so the references stay few)."""
        n, k = ids.shape
        ch = self.checks
        if self.n_steps == 0 and self.implicit is not None:  # a submodule called directly: an implicit prefill
            self.implicit(n)
        if not self.chunk.steps:
            ch.misaligned[layer] += 1
            return
        self._held[layer].append((self._cur, ids, weights))
        ch.rows_now[layer] += n
        if k > ch.kmax[layer]:
            ch.kmax[layer] = k

    def _stage_held(self) -> None:
        """Copy the held ids of the chunk into the staging rows (one concatenation and copy per layer)."""
        for layer, held in enumerate(self._held):
            if not held:
                continue
            g, j = self.where[layer]
            first, end, contiguous, width = held[0][0], held[0][0], True, 0
            for c, x, w in held:
                contiguous = contiguous and c == end
                end, width = c + x.shape[0], max(width, x.shape[1])
                if w is not None and w.dtype is not g.wdtype:  # the trace keeps the widest dtype seen, <= fp32
                    g.wdtype = torch.promote_types(g.wdtype or w.dtype, w.dtype) if w.dtype in _HALF else torch.float32
            if width > g.k:
                self._widen(g, width)
            if contiguous and all(x.shape[1] == width for _, x, _ in held):
                ids = held[0][1] if len(held) == 1 else torch.cat([x for _, x, _ in held])
                g.stage[j, first:first + ids.shape[0], :width].copy_(ids)
                if g.wstage is not None and all(w is not None for _, _, w in held):
                    w = held[0][2] if len(held) == 1 else torch.cat([w for _, _, w in held])
                    g.wstage[j, first:first + w.shape[0], :width].copy_(w)
            else:
                for c, x, w in held:
                    g.stage[j, c:c + x.shape[0], :x.shape[1]].copy_(x)
                    if g.wstage is not None and w is not None:
                        g.wstage[j, c:c + w.shape[0], :w.shape[1]].copy_(w)
            held.clear()

    def record_compiled(self, layer: int, ids: torch.Tensor, weights: torch.Tensor | None) -> None:
        """Compiled mode: device ops only (traced into the graph), no Python state."""
        g, j = self.where[layer]
        n, k = ids.shape[0], min(ids.shape[1], g.k)
        idx = g.cursor + torch.arange(n, device=g.cursor.device)
        g.stage[j, :, :k].index_copy_(0, idx, ids[:, :k].to(g.id_dtype))
        if weights is not None and g.wstage is not None:
            g.wstage[j, :, :k].index_copy_(0, idx, weights[:, :k].float())
        g.rows_now[j].add_(n)
        g.kseen[j].clamp_(min=ids.shape[1])

    @_normal_tensors
    def _widen(self, g: LayerGroup, k: int) -> None:
        old, wold = g.stage, g.wstage
        g.grow(g.rows, k)
        g.stage[:, :, :old.shape[2]].copy_(old)
        if wold is not None:
            g.wstage[:, :, :wold.shape[2]].copy_(wold)

    def seal(self) -> Capture:
        """End a record (:func:`runprof.watch`): flush, then return a copy holding device-side clones of the
        counters, and start this capture over in place (same buffers). No host sync."""
        self.finish()
        sealed = copy.copy(self)
        sealed.groups = [g.seal() for g in self.groups]
        sealed.where = [(sealed.groups[self.groups.index(g)], j) for g, j in self.where]
        sealed.checks = self.checks
        n = len(self.where)
        self.checks = EagerChecks([0] * n, [0] * n, [0] * n, [0] * n, [0] * n)
        for name in ("stats", "tokens", "generated", "finished"):
            setattr(sealed, name, getattr(self, name).clone())
        self.stats[:, :2].zero_()
        self.stats[:, 2].fill_(BIG)
        self.stats[:, 3].fill_(-BIG)
        for t in (self.tokens, self.generated, self.finished):
            t.zero_()
        self.steps = self.steps[:0]
        self.n_steps, self._step_rows, self._cur = 0, 0, 0
        self.chunk = ChunkRows([])
        self.trace = Trace() if self.options.trace else None
        return sealed

    def finish(self) -> None:
        """The region ended: check the last step and reduce what is staged."""
        self._close_step()
        self.flush()

    # --- reducing a chunk ------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Fold the staged rows into the counters (a fixed number of device ops per chunk)."""
        chunk, n = self.chunk, self.chunk.used
        if n == 0:
            self.chunk = ChunkRows([])
            return
        self._stage_held()
        mask, phase, step = self.mask[:n], self.meta[1, :n], self.meta[0, :n]
        ns = len(chunk.steps)
        self.tokens.scatter_add_(0, phase, mask.long())
        if self.trace is not None:
            self._append_trace(n)
        acc = torch.zeros(n, dtype=torch.long, device=self.main)
        touched = torch.zeros(ns, len(self.where), dtype=torch.long, device=self.main)
        for g in self.groups:
            a, t = g.reduce(n, mask.to(g.device), phase.to(g.device), step.to(g.device), ns, self.options.weights)
            acc += a.to(self.main)
            touched[:, g.layers] = t.to(self.main)
        values = self.base + acc
        self._fold_stats(values, mask, phase, {p for _, p, _, _ in chunk.steps})
        self._keep_steps(chunk, values, mask, step, touched)
        self.chunk = ChunkRows([])
        self._cur = 0

    def _fold_stats(self, values: torch.Tensor, mask: torch.Tensor, phase: torch.Tensor, phases: set[int]) -> None:
        for p in sorted(phases):
            mp = mask & (phase == p)
            row = self.stats[p]
            row[0] += (values * mp).sum()
            row[1] += mp.sum()
            row[2] = torch.minimum(row[2], torch.where(mp, values, BIG).amin())
            row[3] = torch.maximum(row[3], torch.where(mp, values, -BIG).amax())

    def _keep_steps(self, chunk: ChunkRows, values: torch.Tensor, mask: torch.Tensor, step: torch.Tensor,
                    touched: torch.Tensor) -> None:
        first = chunk.steps[0][0]
        keep = min(len(chunk.steps), self.options.max_steps - first)
        if keep <= 0:
            return
        ns = len(chunk.steps)
        rec = torch.zeros(ns, 3 + touched.shape[1], dtype=torch.long, device=self.main)
        rec[:, 0].scatter_add_(0, step, mask.long())
        rec[:, 1].scatter_add_(0, step, values * mask)
        rec[:, 2] = rec[:, 0]
        rec[:, 3:] = touched
        with _normal_tensors:
            self.steps = torch.cat([self.steps, rec[:keep]])

    def _append_trace(self, n: int) -> None:
        tr = self.trace
        need = tr.used + n
        if tr.real is None or need > tr.real.numel():
            self._grow_trace(max(need, 2 * (tr.real.numel() if tr.real is not None else 0), 1024))
        sl = slice(tr.used, tr.used + n)
        first = self.chunk.steps[0][0]
        tr.real[sl] = self.mask[:n]
        tr.step[sl] = self.meta[0, :n] + first
        tr.position[sl] = self.meta[2, :n]
        for i, g in enumerate(self.groups):
            tr.ids[i][:, sl, :g.k] = g.stage[:, :n]
            if tr.weights[i] is not None:
                if tr.weights[i].dtype is not g.trace_wdtype:
                    with _normal_tensors:
                        tr.weights[i] = tr.weights[i].to(g.trace_wdtype)
                tr.weights[i][:, sl, :g.k] = g.wstage[:, :n]
        tr.used = need

    @_normal_tensors
    def _grow_trace(self, size: int) -> None:
        tr, used = self.trace, self.trace.used

        tr.real = _extend(tr.real, size, torch.bool, self.main, used)
        tr.step = _extend(tr.step, size, torch.int32, self.main, used)  # steps and positions < 2**31
        tr.position = _extend(tr.position, size, torch.int32, self.main, used)
        ids, weights = [], []
        for i, g in enumerate(self.groups):
            old = tr.ids[i] if i < len(tr.ids) else None
            k = max(g.k, old.shape[2] if old is not None else 0)
            new = torch.full((len(g.layers), size, k), -1, dtype=g.id_dtype, device=g.device)
            if old is not None:
                new[:, :used, :old.shape[2]] = old[:, :used]
            ids.append(new)
            wold = tr.weights[i] if i < len(tr.weights) else None
            if g.wstage is None:
                weights.append(None)
                continue
            wnew = torch.zeros((len(g.layers), size, k), dtype=g.trace_wdtype, device=g.device)
            if wold is not None:
                wnew[:, :used, :wold.shape[2]] = wold[:, :used]
            weights.append(wnew)
        tr.ids, tr.weights = ids, weights

    def nbytes(self) -> dict[str, int]:
        """runprof's own device memory, per device (the ``runprof_capture`` ledger row)."""
        out: dict[str, int] = {}
        for g in self.groups:
            out[str(g.device)] = out.get(str(g.device), 0) + g.nbytes()
        main = [self.mask, self.meta, self.stats, self.tokens, self.generated, self.finished, self.steps]
        if self.trace is not None and self.trace.real is not None:
            main += [self.trace.real, self.trace.step, self.trace.position]
            for g, t, w in zip(self.groups, self.trace.ids, self.trace.weights):
                out[str(g.device)] += t.numel() * t.element_size() + (0 if w is None else w.numel() * w.element_size())
        out[str(self.main)] = out.get(str(self.main), 0) + sum(t.numel() * t.element_size() for t in main)
        return out


def _extend(old: torch.Tensor | None, size: int, dtype: torch.dtype, dev: torch.device, used: int) -> torch.Tensor:
    new = torch.zeros(size, dtype=dtype, device=dev)
    if old is not None:
        new[:used] = old[:used]
    return new


__all__ = ["Capture", "CaptureOptions", "EagerChecks", "Trace"]
