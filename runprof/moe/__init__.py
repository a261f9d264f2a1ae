"""Finding MoE layers, routers and experts; per-architecture adapters; ``set_top_k``."""
from .adapters import Adapter, adapter_for, register_adapter, unregister_adapter
from .discovery import MoELayer, config_top_k, find_moe_layers

__all__ = ["Adapter", "MoELayer", "adapter_for", "config_top_k", "find_moe_layers", "register_adapter", "unregister_adapter"]
