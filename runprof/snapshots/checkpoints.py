"""Checkpoints on disk as :class:`~runprof.snapshots.sources.Source` objects, read without loading them.

Safetensors files (one, several, or shards named by ``*.safetensors.index.json``) are opened with
``safetensors.safe_open``: each tensor is a zero-copy view of the memory-mapped file, so a read costs page
faults, not copies. A mapping keeps every page it touched resident until it is closed, so the source
closes its handles once ``RELEASE_BYTES`` have been read through them; with the comparison's 64 MiB
windows, memory stays near two windows whatever the checkpoint's size. PyTorch ``.bin`` files are
opened with ``torch.load(mmap=True, weights_only=True)`` under the same rule (:mod:`.pickled`: common
wrappers such as ``{"model": {...}}`` are unwrapped; code in a pickle is never run).

Files are read only from inside the checkpoint's folder: every shard a ``weight_map`` names must be a
relative path without ``..``, and its real location (symlinks resolved) must lie in the index's folder
or, for a Hugging Face cache snapshot (``.../snapshots/<rev>/``), in that repository's ``blobs`` folder,
where the cache's own links point. A checkpoint in which no tensor is found is refused.

>>> src = open_checkpoint("path/to/checkpoint")            # doctest: +SKIP
>>> src.metas()["model.embed_tokens.weight"].shape         # doctest: +SKIP
(32000, 4096)
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import ModelNotFoundError
from .pickled import FIX as _FIX
from .pickled import load_pickled
from .shards import SAFETENSORS_SUFFIX, TORCH_SUFFIXES, allowed_roots, check_inside, shard_files
from .sources import CheckpointError, Source, TensorMeta

log = logging.getLogger("runprof")

RELEASE_BYTES = 64 << 20
_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "C64": torch.complex64,
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
__all__ = ["CheckpointError", "SafetensorsSource", "TorchSource", "open_checkpoint"]


class _FileSource(Source):
    """Tensors spread over files (``name -> file``); open handles are closed after RELEASE_BYTES."""

    def __init__(self, files: Mapping[str, Path], *, label: str) -> None:
        self.label = label
        self._files = dict(files)
        self._handles: dict[Path, Any] = {}
        self._touched = 0
        self._metas: dict[str, TensorMeta] = {}
        self._no_values: set[str] = set()  # sparse, meta or quantized tensors: shape and dtype only
        self._flat: tuple[str, torch.Tensor] | None = None
        for path in dict.fromkeys(self._files.values()):
            self._load_metas(path, [n for n, p in self._files.items() if p == path])
            self.release(force=True)

    @classmethod
    def from_paths(cls, paths: list[Path], *, label: str) -> _FileSource:
        """All tensors of ``paths`` (no index); a name stored in two files is an error."""
        self = cls({}, label=label)
        for path in paths:
            names = self._names(self._handle(path))
            for name in names:
                if name in self._files:
                    raise CheckpointError(
                        f"{label}: tensor {name!r} is in both {self._files[name].name} and {path.name}; keep one copy"
                    )
                self._files[name] = path
            self._load_metas(path, names)
            self.release(force=True)
        return self

    def metas(self) -> Mapping[str, TensorMeta]:
        return self._metas

    def has_values(self, name: str) -> bool:
        return name not in self._no_values

    def read(self, name: str, start: int, count: int) -> torch.Tensor:
        if self._flat is None or self._flat[0] != name:
            # reshape copies only a non-contiguous tensor (a .bin may store a transposed view), once per tensor
            self._flat = (name, self._tensor(self._handle(self._files[name]), name).reshape(-1))
        flat = self._flat[1]
        self._touched += count * flat.element_size()
        return flat[start:start + count]

    def release(self, *, force: bool = False) -> None:
        if force or self._touched >= RELEASE_BYTES:
            self._flat = None
            for handle in self._handles.values():
                self._close(handle)
            self._handles.clear()
            self._touched = 0

    def close(self) -> None:
        self.release(force=True)

    def _handle(self, path: Path) -> Any:
        if path not in self._handles:
            self._handles[path] = self._open(path)
        return self._handles[path]

    def _load_metas(self, path: Path, names: list[str]) -> None:
        raise NotImplementedError

    def _open(self, path: Path) -> Any:
        raise NotImplementedError

    def _tensor(self, handle: Any, name: str) -> torch.Tensor:
        raise NotImplementedError

    def _names(self, handle: Any) -> list[str]:
        raise NotImplementedError

    def _close(self, handle: Any) -> None:
        pass


class SafetensorsSource(_FileSource):
    """One or more ``.safetensors`` files, memory-mapped through ``safetensors.safe_open``."""

    def _open(self, path: Path) -> Any:
        from safetensors import SafetensorError, safe_open

        try:
            return safe_open(str(path), framework="pt", device="cpu").__enter__()
        except SafetensorError as e:
            raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({_first_line(e)}); {_FIX}") from e
        except OSError as e:
            raise CheckpointError(f"{path}: cannot open ({e.strerror})") from e

    def _close(self, handle: Any) -> None:
        handle.__exit__(None, None, None)

    def _tensor(self, handle: Any, name: str) -> torch.Tensor:
        return handle.get_tensor(name)

    def _names(self, handle: Any) -> list[str]:
        return list(handle.keys())

    def _load_metas(self, path: Path, names: list[str]) -> None:
        handle = self._handle(path)
        present = set(handle.keys())
        for name in names:
            if name not in present:
                raise CheckpointError(f"{path}: the index names tensor {name!r} but the shard lacks it; {_FIX}")
            view = handle.get_slice(name)
            dtype = _ST_DTYPES.get(view.get_dtype())
            if dtype is None:
                raise CheckpointError(
                    f"{path}: tensor {name!r} has dtype {view.get_dtype()}, which runprof cannot compare "
                    f"(known: {', '.join(_ST_DTYPES)})"
                )
            self._metas[name] = TensorMeta(tuple(view.get_shape()), dtype)


class TorchSource(_FileSource):
    """PyTorch pickled state_dicts (``pytorch_model*.bin``), memory-mapped with ``torch.load``."""

    def _open(self, path: Path) -> dict[str, torch.Tensor]:
        return load_pickled(path)

    def _tensor(self, handle: Any, name: str) -> torch.Tensor:
        return handle[name].detach()

    def _names(self, handle: Any) -> list[str]:
        return list(handle)

    def _load_metas(self, path: Path, names: list[str]) -> None:
        handle = self._handle(path)
        for name in names:
            if name not in handle:
                raise CheckpointError(f"{path}: the index names tensor {name!r} but the file lacks it; {_FIX}")
            t = handle[name]
            if t.is_meta or t.layout != torch.strided or t.is_quantized:
                self._no_values.add(name)
            self._metas[name] = TensorMeta(tuple(t.shape), t.dtype, "meta" if t.is_meta else "cpu")


def _first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of a library's message, cut at ``limit`` characters (safetensors lists every dtype)."""
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _from_files(paths: list[Path], label: str) -> Source:
    cls = SafetensorsSource if paths[0].suffix == SAFETENSORS_SUFFIX else TorchSource
    return cls.from_paths(paths, label=label)


def _from_index(index: Path, label: str) -> Source:
    files = shard_files(index)
    torch_shards = [p for p in files.values() if p.suffix != SAFETENSORS_SUFFIX]
    cls = TorchSource if torch_shards else SafetensorsSource
    return cls(files, label=label)


def _found(path: Path, pattern: str, roots: tuple[Path, ...]) -> list[Path]:
    """Files matching ``pattern`` in ``path``, each checked by the folder rule (a link may lead out)."""
    return [check_inside(p, roots, f"{path}: {p.name}") for p in sorted(path.glob(pattern))]


def _from_dir(path: Path, label: str) -> Source:
    roots = allowed_roots(path)
    for pattern in ("model.safetensors.index.json", "*.safetensors.index.json"):
        found = _found(path, pattern, roots)
        if found:
            return _from_index(found[0], label)
    safetensors = _found(path, "*.safetensors", roots)
    if safetensors:
        return _from_files(safetensors, label)
    for pattern in ("pytorch_model.bin.index.json", "*.bin.index.json"):
        found = _found(path, pattern, roots)
        if found:
            return _from_index(found[0], label)
    bins = _found(path, "pytorch_model*.bin", roots) or _found(path, "model*.bin", roots)
    if bins:
        return _from_files(bins, label)
    raise CheckpointError(
        f"{path}: not a checkpoint (no *.safetensors, *.safetensors.index.json or pytorch_model*.bin inside); "
        "pass a directory written by save_pretrained, or a single .safetensors or .bin file"
    )


def _from_hub(ref: str) -> Path:
    """A hub id's local snapshot directory (the cache only when offline)."""
    from ..models.resolve import hub_offline

    offline = hub_offline()
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.safetensors", "*.safetensors.index.json", "*.bin.index.json", "pytorch_model*.bin"]
        return Path(snapshot_download(ref, allow_patterns=patterns, local_files_only=offline))
    except Exception as e:  # hub errors have many classes; every one means "not available"
        where = "in the local Hugging Face cache (offline)" if offline else "on the hub"
        raise ModelNotFoundError(
            f"{ref}: not a local path, and not found {where} ({type(e).__name__}); pass a checkpoint directory "
            f"or file, or download it first (huggingface-cli download {ref})"
        ) from e


def open_checkpoint(ref: str | os.PathLike[str]) -> Source:
    """Open a checkpoint directory, a ``.safetensors``/``.bin`` file, a shard index, or a hub id.

    Every file is opened (and so validated) here, before any comparison starts.

    >>> src = open_checkpoint("out/model.safetensors")      # doctest: +SKIP
    >>> sorted(src.metas())[:1]                              # doctest: +SKIP
    ['lm_head.weight']
    """
    label = os.fspath(ref)
    if not label.strip():
        raise ModelNotFoundError(
            "an empty checkpoint reference: pass a checkpoint directory, a .safetensors or .bin file, or a hub id "
            "(org/name)"
        )
    source = _open_path(label)
    if not source.metas():
        source.close()
        raise CheckpointError(f"{label}: holds no tensors, so there is nothing to compare; pass a checkpoint "
                              "with weights (is it the right file?)")
    return source


def _open_path(label: str) -> Source:
    path = Path(label).expanduser()
    if not path.exists():
        if _HUB_ID.match(label) and not label.startswith("."):
            path = _from_hub(label)
        else:
            raise ModelNotFoundError(
                f"{label}: no such file or directory; pass a checkpoint directory, a .safetensors or .bin file, "
                "or a hub id (org/name)"
            )
    if path.is_dir():
        return _from_dir(path, label)
    if path.name.endswith(".index.json"):
        return _from_index(path, label)
    if path.suffix == SAFETENSORS_SUFFIX or path.suffix in TORCH_SUFFIXES:
        return _from_files([path], label)
    raise CheckpointError(
        f"{label}: not a checkpoint (expected a directory, *.safetensors, *.bin or *.index.json, got "
        f"{path.suffix or 'a file without suffix'})"
    )
