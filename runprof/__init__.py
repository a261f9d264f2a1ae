"""runprof: parameter counts, runtime expert tracking and memory ledgers for transformers models.

The names below are re-exported lazily (PEP 562): ``import runprof`` imports nothing heavy, so
``python -m runprof --help`` answers before torch or transformers is imported; the first use of a name
imports its module.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "RunprofError": "runprof.errors",
    "compare": "runprof.snapshots",
    "count_params": "runprof.static",
    "load_model": "runprof.models.loading",
    "load_result": "runprof.saved",
    "memory_ledger": "runprof.memory",
    "render": "runprof.renderers",
    "set_top_k": "runprof.moe.topk",
    "snapshot": "runprof.snapshots",
    "track": "runprof.tracking",
    "watch": "runprof.tracking",
}

__all__ = ["RunprofError", "compare", "count_params", "load_model", "load_result", "memory_ledger", "render",
           "set_top_k", "snapshot", "track", "watch"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'runprof' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
