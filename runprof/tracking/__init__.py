"""Runtime tracking: ``track()`` and its collectors (the only code that registers hooks)."""
from .tracker import Tracker, is_tracked, track

__all__ = ["Tracker", "is_tracked", "track"]
