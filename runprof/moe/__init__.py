"""Finding MoE layers, routers and experts; per-architecture adapters; ``set_top_k``."""
from . import builtin  # noqa: F401  (registers the built-in adapters: importing runprof.moe is enough)
from .adapters import Adapter, adapter_for, register_adapter, unregister_adapter
from .discovery import config_top_k, find_moe_layers
from .layer import MoELayer, experts_size

__all__ = ["Adapter", "MoELayer", "adapter_for", "config_top_k", "experts_size", "find_moe_layers",
           "register_adapter", "unregister_adapter"]
