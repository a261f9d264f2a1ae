"""Static counts from ``named_parameters()``: totals, groups, folded layers, MoE layout, bytes."""
from .counting import active_per_token, build_meta_model, count_model, count_params, model_name

__all__ = ["active_per_token", "build_meta_model", "count_model", "count_params", "model_name"]
