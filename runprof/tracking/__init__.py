"""Runtime tracking: ``track()`` and its collectors (the only code that registers hooks)."""
from .tracker import RoutingTrace, Tracker, is_tracked, track

__all__ = ["RoutingTrace", "Tracker", "is_tracked", "track"]
