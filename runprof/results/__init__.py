"""Frozen results in base units (params, bytes, seconds), with ``to_dict``/``from_dict``.

Results are what collectors produce and renderers consume: they hold numbers and cause codes, never display
strings. Every ``to_dict`` writes ``schema`` and ``kind``; ``from_dict(to_dict(r)) == r`` holds for every
result; :func:`runprof.load_result` picks the class from the kind.
"""
from .causes import Cause
from .common import CONVENTIONS, GROUPS, KINDS, SCHEMA, ModelInfo, Stat, check_header, header
from .count import (
    ByteCounts,
    CountResult,
    LayerPattern,
    MoEInfo,
    MoELayerInfo,
    ParamCounts,
    active_per_token,
    convention_offset,
)
from .counts import Observation, TokenCounts
from .memory import LedgerRow, MemoryLedger
from .reconcile import ReconcileRow, reconcile
from .run import PHASES, RANK_LOCAL, RuntimeInfo, StepRecord, TrackResult, combined_extra, touched_params
from .tokens import TokenView, token_view

__all__ = [
    "CONVENTIONS", "GROUPS", "KINDS", "PHASES", "RANK_LOCAL", "SCHEMA", "ByteCounts", "Cause", "CountResult",
    "LayerPattern", "LedgerRow", "MemoryLedger", "ModelInfo", "MoEInfo", "MoELayerInfo", "ParamCounts",
    "ReconcileRow", "RuntimeInfo", "Stat", "StepRecord", "TrackResult", "active_per_token", "check_header",
    "combined_extra", "Observation", "TokenCounts", "TokenView", "token_view",
    "convention_offset", "header", "reconcile", "touched_params",
]
