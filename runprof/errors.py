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
    """An argument is out of range or of the wrong kind (top-k of 0, an empty prompt file, ...)."""
