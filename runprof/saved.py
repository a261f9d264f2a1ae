"""``runprof.load_result``: any JSON runprof wrote, back as its frozen result (the class chosen by ``kind``)."""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence

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
    except RecursionError as e:  # [[[[...]]]] thousands deep: no result runprof writes nests like that
        raise InvalidArgumentError(f"{path}: JSON nested too deeply to be a result runprof wrote") from e


def _kind(d: Mapping[str, Any], where: str) -> str:
    """The kind of a saved result; JSON from before kinds existed is recognised by its keys."""
    kind = d.get("kind")
    if kind is None:
        kind = "run" if "runtime" in d else "count" if "params" in d else None
    if not isinstance(kind, str) or kind not in _CLASSES:
        raise InvalidArgumentError(
            f"{where}unknown result kind {kind!r}; runprof writes the kinds {', '.join(KINDS)}")
    return kind


def _hints(cls: type) -> dict[str, Any]:
    """A dataclass's field types, or {} where an annotation cannot be resolved here (left unchecked)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - names only imported under TYPE_CHECKING
        return {}


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the type ``hint`` names (shallowly for containers of unresolvable types)."""
    if hint is Any or hint is object:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return not args or len(args) == len(value) and all(map(_fits, value, args))
    if origin in (dict, Mapping):
        return isinstance(value, Mapping) and (not args or all(_fits(k, args[0]) and _fits(v, args[1])
                                                              for k, v in value.items()))
    if origin in (list, Sequence):
        return isinstance(value, (list, tuple)) and (not args or all(_fits(v, args[0]) for v in value))
    try:
        return isinstance(value, hint) if isinstance(hint, type) else True
    except TypeError:  # Protocols and other hints isinstance cannot check
        return True


def _mistyped(obj: Any, path: str = "") -> str | None:
    """The first field of a frozen result (dataclasses inside dataclasses, tuples and dicts of them) whose
    value does not have its declared type, as ``"params.total is 'x', expected int"``; None when all fit."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        hints = _hints(type(obj))
        for f in dataclasses.fields(obj):
            value, where = getattr(obj, f.name), f"{path}{f.name}"
            if f.name in hints and not _fits(value, hints[f.name]):
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
                return f"{where} is {shown}, expected {getattr(hints[f.name], '__name__', hints[f.name])}"
            if (found := _mistyped(value, where + ".")) is not None:
                return found
    elif isinstance(obj, (tuple, list)):
        return next((m for i, v in enumerate(obj) if (m := _mistyped(v, f"{path[:-1]}[{i}]."))), None)
    elif isinstance(obj, Mapping):
        return next((m for k, v in obj.items() if (m := _mistyped(v, f"{path}{k}."))), None)
    return None


def load_result(path_or_dict: str | os.PathLike[str] | Mapping[str, Any]) -> Any:
    """Rebuild the result a JSON holds (a path to the file, or the parsed dict), checking schema and kind.

    Raises :class:`~runprof.errors.InvalidArgumentError` with one line for anything else: a missing or
    unreadable file, not JSON, not an object, another schema, an unknown kind, a missing key, or a value whose
    type is not the one its result field declares (``"total": "x"``), so rendering what loaded cannot fail.

    >>> import runprof
    >>> r = runprof.count_params("mixtral")
    >>> runprof.load_result(r.to_dict()) == r
    True
    """
    if not isinstance(path_or_dict, (str, os.PathLike, Mapping)):
        raise InvalidArgumentError.bad("path_or_dict", path_or_dict if len(repr(path_or_dict)) < 60 else "...",
                                       f"expected a path to a JSON file runprof wrote or its parsed dict, not "
                                       f"{type(path_or_dict).__name__}")
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
        result = cls.from_dict(d)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"{where}{e}") from e
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        what = f"key {e.args[0]!r} is missing" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise InvalidArgumentError(f"{where}not a complete {kind} result ({what})") from e
    if (problem := _mistyped(result)) is not None:  # from_dict copies values; types are checked here, once
        raise InvalidArgumentError(f"{where}not a valid {kind} result ({problem})")
    return result


__all__ = ["load_result"]
