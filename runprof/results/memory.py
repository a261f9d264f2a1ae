"""The memory ledger as a frozen result: rows in bytes, each with its source and, where it needs one, a
cause; one ledger per CUDA device beside the total."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .causes import Cause, cause_from_json, cause_to_json


@dataclass(frozen=True)
class LedgerRow:
    """One row: ``bytes`` (None when unknown, with ``reason``), where the figure comes from (``static``,
    ``cache``, ``torch.cuda``, ``nvml``, ``/proc``), and whether it is a ``part`` of the sum that equals
    NVML's per-process figure."""

    name: str
    bytes: int | None
    source: str
    part: bool = False
    reason: Cause | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bytes": self.bytes, "source": self.source, "part": self.part,
                **cause_to_json(self.reason, self.detail)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LedgerRow:
        reason, detail = cause_from_json(d)
        return cls(d["name"], d["bytes"], d["source"], bool(d["part"]), reason, detail)


@dataclass(frozen=True)
class MemoryLedger:
    """Rows of one ledger; under a device map ``devices`` holds each CUDA device's own ledger and ``rows``
    their total (row by row).

    >>> ledger = MemoryLedger((LedgerRow("weights", 80, "static", part=True), LedgerRow("buffers", 0, "static",
    ...                        part=True), LedgerRow("process_rss", None, "/proc", reason=Cause.PROC_UNAVAILABLE)))
    >>> ledger.row("weights").bytes, ledger.parts_total
    (80, 80)
    """

    rows: tuple[LedgerRow, ...]
    devices: Mapping[str, MemoryLedger] = field(default_factory=dict)

    def row(self, name: str) -> LedgerRow:
        """The row called ``name`` (KeyError naming the rows there are when it is absent)."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no ledger row {name!r}; rows: {', '.join(r.name for r in self.rows)}")

    def has(self, name: str) -> bool:
        return any(r.name == name for r in self.rows)

    @property
    def parts_total(self) -> int | None:
        """Σ of the ``part`` rows (equals ``nvml_used`` when every part is known), None if a part is."""
        parts = [r.bytes for r in self.rows if r.part]
        return None if any(p is None for p in parts) else sum(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [r.to_dict() for r in self.rows],
                "devices": {name: {"rows": [r.to_dict() for r in d.rows]} for name, d in self.devices.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MemoryLedger:
        return cls(tuple(LedgerRow.from_dict(r) for r in d["rows"]),
                   {name: cls.from_dict(dev) for name, dev in (d.get("devices") or {}).items()})


__all__ = ["LedgerRow", "MemoryLedger"]
