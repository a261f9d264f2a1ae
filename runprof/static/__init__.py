"""Static counts from ``named_parameters()``: totals, groups, folded layers, MoE layout, bytes."""
from .counting import build_meta_model, count_model, count_params, model_info, model_name

__all__ = ["build_meta_model", "count_model", "count_params", "model_info", "model_name"]
