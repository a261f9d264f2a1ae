"""Shard indexes (``*.safetensors.index.json``, ``pytorch_model.bin.index.json``) and the folder rule.

A checkpoint's files are read only from inside its folder. A ``weight_map`` entry must be a relative file
name without ``..`` (``model-00001-of-00002.safetensors``, ``sub/shard.bin``), must not be the index itself,
and must end in ``.safetensors`` or a PyTorch suffix; its real location, symlinks resolved
(``Path.resolve()``), must lie inside the folder. The one exception is the Hugging Face cache, whose
snapshot folders (``models--org--name/snapshots/<rev>/``) hold links into the repository's own ``blobs``
folder: those targets are inside the checkpoint too. Anything else is a
:class:`~runprof.snapshots.sources.CheckpointError` naming the index, the entry and the fix.

>>> from pathlib import Path
>>> entry_error("../../base/model.safetensors", Path("target/model.safetensors.index.json"))
'goes through ..'
>>> entry_error("model-00001-of-00002.safetensors", Path("ckpt/model.safetensors.index.json")) is None
True
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .pickled import FIX
from .sources import CheckpointError

SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def _json_kind(value: Any) -> str:
    if value == "":
        return "an empty string"
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return next((k for t, k in kinds.items() if isinstance(value, t)), f"the number {value}")


def read_weight_map(index: Path) -> dict[str, str]:
    """The index's ``weight_map`` (tensor name -> shard file name), checked for shape and type."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckpointError(f"{index}: cannot read the shard index ({e.strerror})") from e
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{index}: not a shard index (not valid JSON: {text}); {FIX}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{index}: not a shard index (it holds {_json_kind(data)}, expected an object with "
                              f"a 'weight_map'); {FIX}")
    if "weight_map" not in data:
        raise CheckpointError(f"{index}: not a shard index (no 'weight_map' key); {FIX}")
    weight_map = data["weight_map"]
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: 'weight_map' is {_json_kind(weight_map)}, expected an object mapping "
                              f"tensor names to shard files; {FIX}")
    if not weight_map:
        raise CheckpointError(f"{index}: 'weight_map' is empty: the index names no tensors; {FIX}")
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard.strip():
            raise CheckpointError(f"{index}: weight_map[{name!r}] is {_json_kind(shard)}, expected a shard file "
                                  f"name; {FIX}")
    return weight_map


def entry_error(shard: str, index: Path) -> str | None:
    """Why a ``weight_map`` value cannot name a shard of ``index`` (None when it can), from its text alone."""
    path = Path(shard)
    if "\x00" in shard:
        return "contains a NUL byte"
    if path.is_absolute() or shard.startswith(("/", "\\")):
        return "is an absolute path"
    if ".." in path.parts or ".." in shard.split("\\"):
        return "goes through .."
    if path.name == index.name:
        return "is the index itself"
    if path.suffix != SAFETENSORS_SUFFIX and path.suffix not in TORCH_SUFFIXES:
        return f"is not a {SAFETENSORS_SUFFIX} or {'/'.join(TORCH_SUFFIXES)} file"
    return None


def _real(path: Path, what: str) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop is a RuntimeError before Python 3.13
        raise CheckpointError(f"{what}: cannot resolve {path} ({e}); fix or remove the link") from e


def allowed_roots(folder: Path) -> tuple[Path, ...]:
    """The folders a checkpoint in ``folder`` may read from: itself, and a hub-cache repository's blobs."""
    root = _real(folder, str(folder))
    repo = root.parent.parent
    blobs = repo / "blobs"
    if root.parent.name == "snapshots" and repo.name.startswith(("models--", "datasets--")) and blobs.is_dir():
        return root, blobs
    return (root,)


def check_inside(path: Path, roots: tuple[Path, ...], what: str) -> Path:
    """``path`` itself when its real location is under one of ``roots``; CheckpointError otherwise."""
    real = _real(path, what)
    if not any(real == r or real.is_relative_to(r) for r in roots):
        raise CheckpointError(
            f"{what}: {path} leads to {real}, outside the checkpoint folder {roots[0]}; runprof reads only files "
            "inside it: copy the file into the folder instead of linking it"
        )
    return path


def shard_files(index: Path) -> dict[str, Path]:
    """``{tensor name: shard path}`` for every tensor of ``index``, each shard checked by the folder rule."""
    weight_map = read_weight_map(index)
    roots = allowed_roots(index.parent)
    index_real = _real(index, str(index))
    checked: dict[str, Path] = {}
    for name, shard in weight_map.items():
        if shard in checked:
            continue
        why = entry_error(shard, index)
        if why is not None:
            raise CheckpointError(
                f"{index}: weight_map[{name!r}] names {shard!r}, which {why}; an index names shard files inside "
                f"its own folder ({index.parent}): fix the index or save the checkpoint again"
            )
        path = index.parent / shard
        if not path.is_file():
            users = sum(1 for s in weight_map.values() if s == shard)
            raise CheckpointError(
                f"{index}: names shard {path.name} (for {name!r} and {users - 1} other tensors) but {path} does "
                f"not exist; the download is incomplete: fetch the missing shard or save the checkpoint again"
            )
        check_inside(path, roots, f"{index}: shard {shard!r}")
        if _real(path, str(index)) == index_real:
            raise CheckpointError(f"{index}: weight_map[{name!r}] names the index itself as a shard; {FIX}")
        checked[shard] = path
    suffixes = {p.suffix == SAFETENSORS_SUFFIX for p in checked.values()}
    if len(suffixes) > 1:
        raise CheckpointError(f"{index}: mixes .safetensors and PyTorch shards; an index names shards of one "
                              f"format: {FIX}")
    return {name: checked[shard] for name, shard in weight_map.items()}
