"""runprof: parameter counts, runtime expert tracking and memory ledgers for transformers models."""
from .errors import RunprofError
from .static import count_params

__all__ = ["RunprofError", "count_params"]
__version__ = "0.1.0"
