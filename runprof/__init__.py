"""runprof: parameter counts, runtime expert tracking and memory ledgers for transformers models."""
from .errors import RunprofError
from .moe.topk import set_top_k
from .static import count_params
from .tracking import track

__all__ = ["RunprofError", "count_params", "set_top_k", "track"]
__version__ = "0.1.0"
