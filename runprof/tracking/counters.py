"""Device-side counters of a tracked run, whose size does not grow with the tokens.

The routing hooks only copy each call's expert ids into a staging buffer (``stage``: ``[layers, rows, k]``,
one row per token position of the steps in the current *chunk*); every few steps, and at ``stop()``, the eager
step hook reduces a whole chunk at once with a fixed number of device ops, whatever the number of layers:

- ``load`` / ``load_all`` ``[phases, layers, E]``: assignments per expert, of real tokens / of every row computed
  (padding and finished rows included: what the experts were paid for);
- ``hist`` ``[phases, layers, E + 1]``: how many real tokens used 0, 1, ..., E distinct experts in a layer;
- ``stats`` ``[phases, 4]``: sum, count, min and max of the measured active params per real token (``all``);
- ``tokens`` ``[phases]``: real tokens; ``kseen`` ``[layers]``: the widest ``top_k_index`` seen;
- per step (the first ``max_steps``): real tokens, active-params sum and count, distinct experts per layer.

Everything stays on the device until ``stop()``, which copies it to the CPU once per device. Nothing here syncs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

PHASES: tuple[str, ...] = ("prefill", "decode", "train")
BIG = 2**62

_normal_tensors = torch.inference_mode(False)
"""Decorates what allocates runprof's buffers: normal tensors even when a hook runs under
``torch.inference_mode()``, so that a later in-place update outside it (the last flush at ``stop()``, the next
call of a watch without inference mode) is allowed. In-place updates of normal tensors are allowed inside
inference mode."""


@dataclass
class ChunkRows:
    """Rows of the chunk being filled: where each step starts, its phase and index (Python, eager side)."""

    steps: list[tuple[int, int, int, int]]  # (global step index, phase index, first row, rows)
    used: int = 0  # rows filled so far


class LayerGroup:
    """The staging buffer and counters of the MoE layers on one device."""

    @_normal_tensors
    def __init__(self, device: torch.device, layers: list[int], num_experts: list[int], ppe: list[int],
                 rows: int, k: int, *, weights: bool, coactivation: bool) -> None:
        self.device, self.layers = device, layers
        self.e = max(num_experts)
        n, e = len(layers), self.e
        self.ppe = torch.tensor(ppe, dtype=torch.long, device=device)
        # the smallest signed type that holds ids 0..E-1 and the -1 of an empty slot
        self.id_dtype = torch.int8 if e <= 2**7 else torch.int16 if e <= 2**15 else torch.int32
        self.stage = torch.full((n, rows, k), -1, dtype=self.id_dtype, device=device)
        self.wstage = torch.zeros((n, rows, k), dtype=torch.float32, device=device) if weights else None
        self.wdtype: torch.dtype | None = None  # the widest dtype of the routers' weights seen (eager mode)
        p = len(PHASES)
        self.load = torch.zeros(p, n, e, dtype=torch.long, device=device)
        self.load_all = torch.zeros(p, n, e, dtype=torch.long, device=device)
        self.hist = torch.zeros(p, n, e + 1, dtype=torch.long, device=device)
        self.kseen = torch.zeros(n, dtype=torch.long, device=device)
        self.coact = torch.zeros(n, e, e, dtype=torch.long, device=device) if coactivation else None
        self.wsum = torch.zeros(n, e, dtype=torch.float64, device=device) if weights else None
        # compiled-mode bookkeeping (the hooks cannot touch Python state there): rows routed this step,
        # and over the run: steps whose rows every layer saw, steps a layer missed or saw misaligned
        self.cursor = torch.zeros((), dtype=torch.long, device=device)
        self.rows_now = torch.zeros(n, dtype=torch.long, device=device)
        self.missed = torch.zeros(n, dtype=torch.long, device=device)
        self.misaligned = torch.zeros(n, dtype=torch.long, device=device)
        self._layer_e = torch.arange(n, device=device)[:, None, None] * e

    @property
    def rows(self) -> int:
        return int(self.stage.shape[1])

    @property
    def k(self) -> int:
        return int(self.stage.shape[2])

    @property
    def trace_wdtype(self) -> torch.dtype:
        """The trace's weight dtype: the routers' own when 16-bit (exact, 2 bytes), else float32."""
        return self.wdtype or torch.float32

    @_normal_tensors
    def grow(self, rows: int, k: int) -> None:
        """Bigger staging (called between chunks, when the buffer is empty): ids reset to -1."""
        rows, k = max(rows, self.rows), max(k, self.k)
        self.stage = torch.full((self.stage.shape[0], rows, k), -1, dtype=self.id_dtype, device=self.device)
        if self.wstage is not None:
            self.wstage = torch.zeros((self.stage.shape[0], rows, k), dtype=torch.float32, device=self.device)

    def nbytes(self) -> int:
        tensors = [self.stage, self.wstage, self.load, self.load_all, self.hist, self.kseen, self.coact, self.wsum,
                   self.cursor, self.rows_now, self.missed, self.misaligned, self.ppe]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def reduce(self, n: int, mask: torch.Tensor, phase: torch.Tensor, step: torch.Tensor, n_steps: int,
               weights: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold rows ``[0, n)`` into the counters; return (Σ_layers distinct x params per expert per row [n],
        distinct experts per step and layer [n_steps, layers]), and reset the staging rows."""
        ids = self.stage[:, :n].long()  # [L, n, K]
        valid = ids >= 0
        real = valid & mask[None, :, None]
        flat = self._layer_e + ids.clamp(min=0)  # [L, n, K] in [0, L*E)
        per_phase = phase[None, :, None] * self.load[0].numel() + flat
        self.load.view(-1).scatter_add_(0, per_phase.reshape(-1), real.reshape(-1).long())
        self.load_all.view(-1).scatter_add_(0, per_phase.reshape(-1), valid.reshape(-1).long())
        s = ids.sort(-1).values
        repeats = ((s[..., 1:] == s[..., :-1]) & (s[..., 1:] >= 0)).sum(-1) if s.shape[-1] > 1 else 0
        distinct = valid.sum(-1) - repeats  # [L, n]
        h = self.hist.shape[-1]
        layer_h = torch.arange(distinct.shape[0], device=self.device)[:, None] * h
        hidx = phase[None, :] * self.hist[0].numel() + layer_h + distinct
        self.hist.view(-1).scatter_add_(0, hidx.reshape(-1), mask.expand_as(distinct).reshape(-1).long())
        if self.coact is not None:
            self._coactivation(ids, real)
        if weights and self.wsum is not None:
            w = self.wstage[:, :n].double() * real
            self.wsum.view(-1).scatter_add_(0, flat.reshape(-1), w.reshape(-1))
        touched = self._touched(flat, valid, step, n_steps)
        acc = (distinct * self.ppe[:, None]).sum(0)
        self.stage[:, :n].fill_(-1)
        if self.wstage is not None:
            self.wstage[:, :n].zero_()
        return acc, touched

    def _touched(self, flat: torch.Tensor, valid: torch.Tensor, step: torch.Tensor, n_steps: int) -> torch.Tensor:
        """Distinct experts each step touched in each layer (every row computed counts: weight traffic)."""
        size = n_steps * self.load[0].numel()
        idx = step[None, :, None] * self.load[0].numel() + flat
        idx = torch.where(valid, idx, size)  # invalid slots go to a spare cell
        seen = torch.zeros(size + 1, dtype=torch.uint8, device=self.device).scatter_(0, idx.reshape(-1), 1)
        return seen[:size].view(n_steps, -1, self.e).sum(-1)  # [steps, L]

    def _coactivation(self, ids: torch.Tensor, real: torch.Tensor) -> None:
        e = self.e
        a, b = ids.clamp(min=0)[..., :, None], ids.clamp(min=0)[..., None, :]
        both = real[..., :, None] & real[..., None, :]
        layer = torch.arange(ids.shape[0], device=self.device)[:, None, None, None] * (e * e)
        idx = layer + a * e + b
        self.coact.view(-1).scatter_add_(0, idx.reshape(-1), both.reshape(-1).long())

    COUNTERS = ("load", "load_all", "hist", "kseen", "coact", "wsum", "missed", "misaligned")

    def seal(self) -> LayerGroup:
        """A copy whose counters are device-side clones (no host sync), and these counters zeroed in place (the
        buffers keep their identity: a compiled graph that writes them needs no recompilation)."""
        sealed = copy.copy(self)
        for name in self.COUNTERS:
            t = getattr(self, name)
            if t is not None:
                setattr(sealed, name, t.clone())
                t.zero_()
        return sealed

    def end_step(self, rows: int) -> None:
        """Compiled mode: check the step's rows on the device (no host sync), then reset."""
        self.missed.add_(self.rows_now == 0)
        self.misaligned.add_((self.rows_now != rows) & (self.rows_now > 0))
        self.rows_now.zero_()


__all__ = ["BIG", "PHASES", "ChunkRows", "LayerGroup"]
