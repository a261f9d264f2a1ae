"""runprof: parameter counts, runtime expert tracking and memory ledgers for transformers models."""
from .errors import RunprofError
from .memory import memory_ledger
from .models.loading import load_model
from .moe.topk import set_top_k
from .renderers import render
from .saved import load_result
from .snapshots import compare, snapshot
from .static import count_params
from .tracking import track, watch

__all__ = ["RunprofError", "compare", "count_params", "load_model", "load_result", "memory_ledger", "render",
           "set_top_k", "snapshot", "track", "watch"]
__version__ = "0.1.0"
