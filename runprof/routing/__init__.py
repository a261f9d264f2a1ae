"""Routing statistics over captured routing (load, balance, locality, co-activation, distinct per step) and
the top-k benchmark."""
from .baselines import (
    expected_distinct,
    random_any_overlap,
    random_coactivation,
    random_first_choice,
    random_jaccard,
)
from .bench import BenchResult, BenchRun, bench
from .router import RouterDistribution, router_distribution
from .stats import LayerRouting, RoutingStats, layer_stats, routing_stats

__all__ = [
    "BenchResult",
    "BenchRun",
    "LayerRouting",
    "RouterDistribution",
    "RoutingStats",
    "bench",
    "expected_distinct",
    "layer_stats",
    "random_any_overlap",
    "random_coactivation",
    "random_first_choice",
    "random_jaccard",
    "router_distribution",
    "routing_stats",
]
