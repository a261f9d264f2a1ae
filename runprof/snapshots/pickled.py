"""PyTorch pickled checkpoints (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) read without running their code.

Files are read with ``torch.load(weights_only=True)`` only (memory-mapped when the file is a zip archive,
else read whole), so a pickle that names a function or class is refused, never run. Every failure of
``torch.load`` becomes one :class:`~runprof.snapshots.sources.CheckpointError` line naming the file; torch's
own advice to retry with ``weights_only=False`` is not passed on.

Training code often nests the state_dict: when the top level holds no tensor, the mapping under the first
of ``WRAPPER_KEYS`` (``state_dict``, ``model_state_dict``, ``model``, ``module``, ``ema``, ``model_ema``,
``ema_state_dict``, ``state_dict_ema``, ``network``, ``net``) that holds tensors is used, up to
``MAX_DEPTH`` levels deep (``{"model": {"module": {...}}}``). Entries that are not tensors with string
names (epochs, optimizer state, configs) are skipped; a file in which no tensor is found is refused.

>>> import torch
>>> state_dict_of({"epoch": 3, "model": {"w": torch.ones(2)}}, "ckpt.pt")
{'w': tensor([1., 1.])}
>>> state_dict_of({"opt": {"lr": 0.1}}, "ckpt.pt")
Traceback (most recent call last):
...
runprof.errors.CheckpointError: ckpt.pt: no tensors found (top-level keys: opt); ...
"""
from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from .sources import CheckpointError

log = logging.getLogger("runprof")

WRAPPER_KEYS: tuple[str, ...] = (
    "state_dict", "model_state_dict", "model", "module", "ema", "model_ema", "ema_state_dict", "state_dict_ema",
    "network", "net",
)
"""Keys under which training code nests a state_dict, tried in this order when the top level holds no tensor."""
MAX_DEPTH = 4
FIX = "re-download it or save it again"
_NOT_ZIP = "_use_new_zipfile_serialization"  # torch's message when mmap=True meets a legacy (non-zip) file


def load_pickled(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save`` file (unwrapped, see the module docstring); CheckpointError otherwise."""
    return state_dict_of(_torch_load(path), path)


def _torch_load(path: Path) -> Any:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise CheckpointError(f"{path}: cannot open ({e.strerror})") from e
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); {FIX}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about pickle protocols on stderr; the CLI prints one line
        try:
            return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as e:
            if _NOT_ZIP not in str(e):
                raise load_error(path, e) from e
        except Exception as e:  # torch raises UnpicklingError, EOFError, IndexError, zip errors, ...
            raise load_error(path, e) from e
        log.info("%s: legacy (non-zip) format, loaded without mmap", path)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # the same variety as above, now from the legacy reader
            raise load_error(path, e) from e


def load_error(path: Path | str, e: BaseException) -> CheckpointError:
    """One line for a failed ``torch.load``: the object it refused to run, or what it could not read."""
    text = str(e)
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    if refused:
        return CheckpointError(
            f"{path}: holds a non-tensor object ({refused[1]}), which runprof will not run: checkpoints are read "
            "with torch.load(weights_only=True), tensors and plain containers only; save the state_dict alone "
            "(torch.save(model.state_dict(), path)) or convert the checkpoint to safetensors"
        )
    opcode = re.search(r"Unsupported operand (\d+)", text)
    detail = (f"pickle opcode {opcode[1]} is not allowed with weights_only=True" if opcode
              else _detail(text) or type(e).__name__)
    return CheckpointError(
        f"{path}: cannot read as a PyTorch checkpoint ({detail}): the file is corrupt or not torch.save output; {FIX}"
    )


def _detail(text: str) -> str:
    """The first line of torch's message that says what failed (not its advice about ``weights_only``)."""
    for line in text.splitlines():
        line = line.strip()
        if line and "weights_only" not in line and "Weights only" not in line:
            return line[:200]
    return ""


def _has_tensor(obj: Mapping[Any, Any]) -> bool:
    return any(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: Any, depth: int = 0) -> tuple[Any, list[str]]:
    """The mapping that holds the tensors, and the wrapper keys that led to it."""
    if not isinstance(obj, Mapping) or depth >= MAX_DEPTH or _has_tensor(obj):
        return obj, []
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            found, trail = _unwrap(inner, depth + 1)
            if isinstance(found, Mapping) and _has_tensor(found):
                return found, [key, *trail]
    return obj, []


def state_dict_of(obj: Any, path: Path | str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` inside what ``torch.load`` returned (see the module docstring).

    >>> import torch
    >>> sorted(state_dict_of({"state_dict": {"a": torch.zeros(1), "step": 7}}, "x.ckpt"))
    ['a']
    """
    found, trail = _unwrap(obj)
    if not isinstance(found, Mapping):
        raise CheckpointError(
            f"{path}: holds an object of type {type(obj).__name__}, not a state_dict of tensors; save "
            "model.state_dict() instead"
        )
    if trail:
        log.info("%s: tensors found under %s", path, " -> ".join(trail))
    tensors = {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        keys = [str(k) for k in list(found)[:6]]
        listed = ", ".join(keys) + (", ..." if len(found) > len(keys) else "") if keys else "none"
        raise CheckpointError(
            f"{path}: no tensors found (top-level keys: {listed}); runprof reads tensors at the top level or under "
            f"{', '.join(WRAPPER_KEYS)}: save model.state_dict() itself"
        )
    if len(tensors) < len(found):
        log.debug("%s: %d entries are not named tensors: skipped", path, len(found) - len(tensors))
    return tensors
