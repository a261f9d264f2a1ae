"""Errors raised by runprof.

Every message names the bad value, what was expected and how to fix it; the CLI prints the message as
one line on stderr and exits with code 2. Causes are chained with ``raise ... from e``.
"""
from __future__ import annotations


class RunprofError(Exception):
    """Base class for every error runprof raises on purpose (user input, unsupported models)."""


class ModelNotFoundError(RunprofError):
    """A model reference (alias, path, hub id) could not be resolved to a config or weights."""


class UnsupportedModelError(RunprofError):
    """The model's architecture cannot be read (e.g. an MoE layout no adapter understands)."""


class TrackingError(RunprofError):
    """Misuse of the tracker: nested tracking of one model, reading a result before exit, ..."""


class InvalidArgumentError(RunprofError):
    """An argument is out of range or of the wrong kind (top-k of 0, an empty prompt file, ...).

    Raised with :meth:`bad` for a named parameter, the error keeps ``param``, ``value`` and ``problem``
    apart, so the CLI can name its own flag (``--num-layers 9: ...``) where the library names its parameter
    (``num_layers=9: ...``).

    >>> str(InvalidArgumentError.bad("num_layers", 9, "this model has 4 layers (1..4)"))
    'num_layers=9: this model has 4 layers (1..4)'
    """

    param: str | None = None
    value: object = None
    problem: str = ""

    @classmethod
    def bad(cls, param: str, value: object, problem: str) -> InvalidArgumentError:
        e = cls(f"{param}={value!r}: {problem}")
        e.param, e.value, e.problem = param, value, problem
        return e

    def as_flag(self, flags: dict[str, str]) -> str:
        """The message with the parameter shown as its command-line flag (``flags[param]``)."""
        if self.param is None or self.param not in flags:
            return str(self)
        value = ",".join(map(str, self.value)) if isinstance(self.value, (list, tuple)) else self.value
        return f"{flags[self.param]} {value}: {self.problem}"


class CheckpointError(RunprofError):
    """A checkpoint on disk cannot be read: truncated or corrupt file, missing shard, not a checkpoint, a shard
    outside the checkpoint's folder, or no tensors at all."""
