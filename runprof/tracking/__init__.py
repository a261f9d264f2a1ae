"""Runtime tracking: ``track()`` and its collectors (the only code that registers hooks)."""
from .distributed import merge_across_ranks
from .trace import LayerTrace, RoutingTrace, StepTrace, usage
from .tracker import Tracker, is_tracked, track
from .watch import Watcher, watch

__all__ = ["LayerTrace", "RoutingTrace", "StepTrace", "Tracker", "Watcher", "is_tracked", "merge_across_ranks", "track",
           "usage", "watch"]
