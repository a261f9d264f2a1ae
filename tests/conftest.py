"""Shared fixtures: a check that no test leaves a hook behind, and the reference data's location."""
from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO.parent / "shared" / "reference"
BUNDLED_CONFIGS = REPO / "runprof" / "models" / "configs"

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def _hooks_of(module: nn.Module) -> tuple:
    return tuple(tuple(getattr(module, d, {}).keys()) for d in _HOOK_DICTS)


def _live_modules() -> list[nn.Module]:
    return [o for o in gc.get_objects() if isinstance(o, nn.Module)]


def _runprof_hooks(module: nn.Module) -> list[str]:
    found = []
    for d in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
        for fn in getattr(module, d, {}).values():
            owner = getattr(fn, "__self__", fn)
            if type(owner).__module__.startswith("runprof") or getattr(fn, "__module__", "").startswith("runprof"):
                found.append(f"{type(module).__name__}.{d}")
    return found


@pytest.fixture(autouse=True)
def no_hooks_left_behind():
    """Every module's hooks are the same after the test as before it, and no runprof hook survives."""
    before = {id(m): (m, _hooks_of(m)) for m in _live_modules()}
    yield
    gc.collect()
    leftovers = []
    for m in _live_modules():
        leftovers += _runprof_hooks(m)
        if id(m) in before and before[id(m)][0] is m and before[id(m)][1] != _hooks_of(m):
            leftovers.append(f"{type(m).__name__}: hooks changed")
    assert not leftovers, f"hooks left behind: {leftovers[:5]}"
    assert not torch.nn.modules.module._global_forward_hooks
    assert not torch.nn.modules.module._global_forward_pre_hooks


def reference_config(name: str) -> Path:
    """A reference config.json: the shared copy when present, else the one runprof ships."""
    shared = SHARED_REFERENCE / "configs" / f"{name}.json"
    return shared if shared.is_file() else BUNDLED_CONFIGS / f"{name}.json"
