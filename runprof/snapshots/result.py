"""The frozen result of a comparison: sections of differing tensors, skipped tensors and totals.

Numbers stay numbers (bytes, element counts, absolute differences); ``None`` means "not known" (a
maximum difference is unknown when only digests were at hand). ``from_dict(to_dict(r)) == r``.

The ``verdict`` is one of ``VERDICTS``: ``"different"`` when any difference section has an entry,
``"not_proven"`` when nothing differs but some tensors' values could not be read (meta or sparse tensors,
snapshots without digests: ``totals.values_unknown``), else ``"identical"``. ``identical`` is True only for
``"identical"``: every value was compared and equal.

>>> r = CompareResult(base="a", target="b")
>>> r.verdict, r.identical, CompareResult.from_dict(r.to_dict()) == r
('identical', True, True)
>>> CompareResult(base="a", target="b", totals=CompareTotals(compared=2, equal=1, values_unknown=1)).verdict
'not_proven'
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from ..results.common import Env, fill_env, header, restore_env

SCHEMA = "runprof/1"
SECTIONS: tuple[str, ...] = ("only_in_base", "only_in_target", "shape_mismatch", "dtype_mismatch", "value_mismatch")
"""The sections that count as differences, in report order."""
VERDICTS: tuple[str, ...] = ("identical", "different", "not_proven")


@dataclass(frozen=True)
class TensorEntry:
    """A tensor present on one side only."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class ShapeMismatch:
    name: str
    base_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    base_dtype: str
    target_dtype: str


@dataclass(frozen=True)
class DtypeMismatch:
    """Same name and shape, different dtype; the values are compared after promotion when at hand."""

    name: str
    shape: tuple[int, ...]
    base_dtype: str
    target_dtype: str
    max_abs_diff: float | None = None
    differing_elements: int | None = None


@dataclass(frozen=True)
class ExpertDiff:
    """One expert (index along dim 0) of a fused expert tensor that differs."""

    index: int
    max_abs_diff: float
    differing_elements: int


@dataclass(frozen=True)
class ValueMismatch:
    """Same name, shape and dtype; values differ beyond ``|t - b| <= atol + rtol * |b|``.

    ``max_abs_diff`` is over all elements (``inf`` where a NaN or inf meets a different value);
    ``max_abs_diff`` and ``differing_elements`` are ``None`` when only digests were compared.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    max_abs_diff: float | None
    differing_elements: int | None
    experts: tuple[ExpertDiff, ...] = ()

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class SkippedTensor:
    """A one-sided tensor that is not a difference (recomputable buffer, tied weight) or an ignored one."""

    name: str
    side: str  # "base", "target" or "both"
    reason: str


@dataclass(frozen=True)
class CompareTotals:
    base_tensors: int = 0
    target_tensors: int = 0
    compared: int = 0  # names present on both sides, not ignored
    equal: int = 0
    values_unknown: int = 0  # compared by name, shape and dtype only (e.g. meta tensors)
    base_bytes: int = 0
    target_bytes: int = 0
    compared_bytes: int = 0  # bytes read from both sides for value comparison


@dataclass(frozen=True)
class CompareResult:
    """What differs between a base and a target (models, state_dicts, snapshots or checkpoints)."""

    base: str
    target: str
    rtol: float = 0.0
    atol: float = 0.0
    only_in_base: tuple[TensorEntry, ...] = ()
    only_in_target: tuple[TensorEntry, ...] = ()
    shape_mismatch: tuple[ShapeMismatch, ...] = ()
    dtype_mismatch: tuple[DtypeMismatch, ...] = ()
    value_mismatch: tuple[ValueMismatch, ...] = ()
    recomputable: tuple[SkippedTensor, ...] = ()
    ignored: tuple[SkippedTensor, ...] = ()
    totals: CompareTotals = field(default_factory=CompareTotals)
    env: Env | None = field(default=None, compare=False)  # versions, device, time: filled when made

    def __post_init__(self) -> None:
        fill_env(self, "cpu")

    @property
    def differences(self) -> int:
        """Number of entries in the five difference sections."""
        return sum(len(getattr(self, s)) for s in SECTIONS)

    @property
    def verdict(self) -> str:
        """``"different"``, ``"not_proven"`` (nothing differs, some values unknown) or ``"identical"``."""
        if self.differences:
            return "different"
        return "not_proven" if self.totals.values_unknown else "identical"

    @property
    def identical(self) -> bool:
        """True when every compared value was read and equal, and nothing differs beyond the recomputable and
        ignored tensors (``verdict == "identical"``)."""
        return self.verdict == "identical"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the sections, totals, and the derived ``identical``/``verdict``/``differences``."""
        out: dict[str, Any] = {**header("compare", self.env), "base": self.base, "target": self.target,
                               "rtol": self.rtol, "atol": self.atol, "identical": self.identical,
                               "verdict": self.verdict, "differences": self.differences}
        for name in (*SECTIONS, "recomputable", "ignored"):
            out[name] = [_entry_to_dict(e) for e in getattr(self, name)]
        out["totals"] = _entry_to_dict(self.totals)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CompareResult:
        """The inverse of :meth:`to_dict` (``identical``, ``verdict`` and ``differences`` are derived)."""
        kinds = {"only_in_base": TensorEntry, "only_in_target": TensorEntry, "shape_mismatch": ShapeMismatch,
                 "dtype_mismatch": DtypeMismatch, "value_mismatch": ValueMismatch,
                 "recomputable": SkippedTensor, "ignored": SkippedTensor}
        sections = {k: tuple(_entry_from_dict(kind, e) for e in d.get(k, ())) for k, kind in kinds.items()}
        return restore_env(cls(base=d["base"], target=d["target"], rtol=d["rtol"], atol=d["atol"],
                               totals=CompareTotals(**d["totals"]), **sections), d)


def _entry_to_dict(entry: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(entry):
        value = getattr(entry, f.name)
        if f.name == "experts":
            value = [_entry_to_dict(e) for e in value]
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _entry_from_dict(kind: type, d: Mapping[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for f in fields(kind):
        if f.name not in d:
            continue
        value = d[f.name]
        if f.name == "experts":
            value = tuple(ExpertDiff(**e) for e in value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return kind(**kwargs)
