"""State-dict snapshots and comparison of models and checkpoints: ``snapshot``, ``compare``.

Equality is one rule for every input (tensors, checkpoints, snapshots): bitwise unless ``rtol``/``atol``
is given (``-0.0 != +0.0``, NaNs equal only with equal payloads); with a tolerance, numeric (NaN equals
NaN; refused with a Snapshot, which holds digests, not values). ``CompareResult.verdict`` is
``"identical"`` (every value compared and equal), ``"different"`` or ``"not_proven"`` (nothing differs but
some values could not be read). Checkpoint files are read only from inside their folder, ``.bin`` files
only with ``weights_only=True`` (wrappers in ``WRAPPER_KEYS`` unwrapped); bad input is a ``CheckpointError``.
"""
from .checkpoints import CheckpointError, open_checkpoint
from .compare import RECOMPUTABLE, compare
from .fingerprint import Snapshot, TensorFingerprint, snapshot
from .pickled import WRAPPER_KEYS
from .result import (
    VERDICTS,
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
    "VERDICTS",
    "ValueMismatch",
    "WRAPPER_KEYS",
    "compare",
    "open_checkpoint",
    "snapshot",
]
