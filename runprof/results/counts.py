"""What a tracked run's rows were: prompt and generated tokens, rows computed, and how well the hooks saw them."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from .causes import Cause


@dataclass(frozen=True)
class TokenCounts:
    """Tokens and rows of a run (see the README's definitions).

    - ``prompt``: unique, unpadded prompt tokens (a prompt copied for beams or ``num_return_sequences`` counts
      once); None outside ``generate()`` (``cause``);
    - ``generated``: what ``generate()`` returned per sequence, pads excluded, summed over the sequences;
    - ``rows``: positions the model computed, per phase (padding, beams, copies and finished rows included:
      what the experts were paid for);
    - ``padding_rows``: rows the attention mask marked as padding; ``finished_rows``: rows computed after their
      sequence had fed its EOS (their output is discarded); ``sequences``: sequences ``generate()`` returned;
      ``generations``: ``generate()`` calls (or prefills) seen.
    """

    prompt: int | None
    generated: int | None
    rows: dict[str, int]
    padding_rows: int
    finished_rows: int
    sequences: int | None
    generations: int
    cause: Cause | None = None

    def __add__(self, other: TokenCounts) -> TokenCounts:
        def add(a: int | None, b: int | None) -> int | None:
            return None if a is None or b is None else a + b

        return TokenCounts(add(self.prompt, other.prompt), add(self.generated, other.generated),
                           {k: self.rows.get(k, 0) + other.rows.get(k, 0) for k in {**self.rows, **other.rows}},
                           self.padding_rows + other.padding_rows, self.finished_rows + other.finished_rows,
                           add(self.sequences, other.sequences), self.generations + other.generations,
                           self.cause or other.cause)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["rows"] = dict(self.rows)
        d["cause"] = None if self.cause is None else self.cause.value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TokenCounts:
        kw = {f.name: d[f.name] for f in fields(cls)}
        kw["rows"] = dict(kw["rows"])
        kw["cause"] = None if d["cause"] is None else Cause(d["cause"])
        return cls(**kw)


@dataclass(frozen=True)
class Observation:
    """How completely the hooks saw the run: the capture mode, steps whose routing a layer missed or saw
    misaligned, routing calls re-run inside backward (not counted), per-step records kept, and notes."""

    compiled: bool = False
    trace: bool = False
    steps: int = 0
    steps_kept: int = 0
    missed_layer_steps: int = 0
    misaligned_layer_steps: int = 0
    recomputed_calls: int = 0
    notes: tuple[tuple[Cause, Mapping[str, Any]], ...] = field(default_factory=tuple)

    @property
    def complete(self) -> bool:
        """Every layer saw every step's rows: the per-token figures are measured, not partial."""
        return self.missed_layer_steps == 0 and self.misaligned_layer_steps == 0

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "notes"}
        d["notes"] = [{"cause": c.value, "detail": dict(x)} for c, x in self.notes]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Observation:
        kw = {f.name: d[f.name] for f in fields(cls) if f.name != "notes"}
        return cls(**kw, notes=tuple((Cause(n["cause"]), dict(n["detail"])) for n in d["notes"]))


__all__ = ["Observation", "TokenCounts"]
