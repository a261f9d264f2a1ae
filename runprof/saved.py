"""``runprof.load_result``: any JSON runprof wrote, back as its frozen result (the class chosen by ``kind``)."""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from .errors import InvalidArgumentError
from .results import KINDS, SCHEMA

_CLASSES: dict[str, tuple[str, str]] = {
    "run": ("runprof.results", "TrackResult"),
    "count": ("runprof.results", "CountResult"),
    "compare": ("runprof.snapshots.result", "CompareResult"),
    "bench": ("runprof.routing.bench", "BenchResult"),
    "snapshot": ("runprof.snapshots.fingerprint", "Snapshot"),
}


def _read(path: str | os.PathLike[str]) -> Any:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InvalidArgumentError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidArgumentError(f"{path}: is a directory; pass a JSON file written with --json") from None
    except OSError as e:
        raise InvalidArgumentError(f"{path}: cannot read ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise InvalidArgumentError(f"{path}: not UTF-8 text (byte {e.start}); pass a JSON file written with --json") \
            from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e


def _kind(d: Mapping[str, Any], where: str) -> str:
    """The kind of a saved result; JSON from before kinds existed is recognised by its keys."""
    kind = d.get("kind")
    if kind is None:
        kind = "run" if "runtime" in d else "count" if "params" in d else None
    if kind not in _CLASSES:
        raise InvalidArgumentError(
            f"{where}unknown result kind {kind!r}; runprof writes the kinds {', '.join(KINDS)}")
    return kind


def load_result(path_or_dict: str | os.PathLike[str] | Mapping[str, Any]) -> Any:
    """Rebuild the result a JSON holds (a path to the file, or the parsed dict), checking schema and kind.

    Raises :class:`~runprof.errors.InvalidArgumentError` with one line for anything else: a missing or
    unreadable file, not JSON, not an object, another schema, an unknown kind, a missing or mistyped key.

    >>> import runprof
    >>> r = runprof.count_params("mixtral")
    >>> runprof.load_result(r.to_dict()) == r
    True
    """
    d = path_or_dict if isinstance(path_or_dict, Mapping) else _read(path_or_dict)
    where = "" if isinstance(path_or_dict, Mapping) else f"{path_or_dict}: "
    if not isinstance(d, Mapping):
        raise InvalidArgumentError(f"{where}a saved result is a JSON object, not a JSON {type(d).__name__}")
    if d.get("schema") != SCHEMA:
        raise InvalidArgumentError(
            f"{where}schema {d.get('schema')!r} is not {SCHEMA!r}: not a result written by this runprof version")
    kind = _kind(d, where)
    module, name = _CLASSES[kind]
    cls = getattr(importlib.import_module(module), name)
    try:
        return cls.from_dict(d)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"{where}{e}") from e
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        what = f"key {e.args[0]!r} is missing" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise InvalidArgumentError(f"{where}not a complete {kind} result ({what})") from e


__all__ = ["load_result"]
