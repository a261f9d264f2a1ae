"""State-dict snapshots and comparison of models and checkpoints: ``snapshot``, ``compare``."""
from .checkpoints import CheckpointError, open_checkpoint
from .compare import RECOMPUTABLE, compare
from .fingerprint import Snapshot, TensorFingerprint, snapshot
from .result import (
    CompareResult,
    CompareTotals,
    DtypeMismatch,
    ExpertDiff,
    ShapeMismatch,
    SkippedTensor,
    TensorEntry,
    ValueMismatch,
)

__all__ = [
    "RECOMPUTABLE",
    "CheckpointError",
    "CompareResult",
    "CompareTotals",
    "DtypeMismatch",
    "ExpertDiff",
    "ShapeMismatch",
    "SkippedTensor",
    "Snapshot",
    "TensorEntry",
    "TensorFingerprint",
    "ValueMismatch",
    "compare",
    "open_checkpoint",
    "snapshot",
]
