"""Shared fixtures: a check that no test leaves a hook behind, and the reference data's location."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(1)  # tiny models: one thread is fastest, and steady on a shared 2-core machine

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
    """Hook ids per hook table, except transformers' own output recorders (installed once by
    ``output_router_logits=True`` and kept by transformers on purpose)."""
    def own(fn) -> bool:
        return not getattr(fn, "__module__", "").startswith("transformers")

    return tuple(tuple(k for k, fn in getattr(module, d, {}).items() if own(fn)) for d in _HOOK_DICTS[:4])


def _runprof_hooks(module: nn.Module) -> list[str]:
    found = []
    for d in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
        for fn in getattr(module, d, {}).values():
            owner = getattr(fn, "__self__", fn)
            if type(owner).__module__.startswith("runprof") or getattr(fn, "__module__", "").startswith("runprof"):
                found.append(f"{type(module).__name__}.{d}")
    return found


_REGISTER = ("register_forward_pre_hook", "register_forward_hook", "register_full_backward_hook",
             "register_full_backward_pre_hook")


@pytest.fixture(autouse=True)
def no_hooks_left_behind(monkeypatch):
    """Every module that gets a hook during the test has the same hooks after it as before, and no
    runprof hook survives (exceptions included). Registrations are recorded as they happen, so the check
    costs nothing for modules the test never hooks."""
    touched: dict[int, tuple[nn.Module, tuple]] = {}

    def recording(name: str):
        original = getattr(nn.Module, name)

        def register(self, *args, **kwargs):
            touched.setdefault(id(self), (self, _hooks_of(self)))
            return original(self, *args, **kwargs)

        return register

    for name in _REGISTER:
        monkeypatch.setattr(nn.Module, name, recording(name))
    yield
    leftovers = []
    for module, before in touched.values():
        leftovers += _runprof_hooks(module)
        if _hooks_of(module) != before:
            leftovers.append(f"{type(module).__name__}: hooks changed")
    assert not leftovers, f"hooks left behind: {leftovers[:5]}"
    assert not torch.nn.modules.module._global_forward_hooks
    assert not torch.nn.modules.module._global_forward_pre_hooks


def reference_config(name: str) -> Path:
    """A reference config.json: the shared copy when present, else the one runprof ships."""
    shared = SHARED_REFERENCE / "configs" / f"{name}.json"
    return shared if shared.is_file() else BUNDLED_CONFIGS / f"{name}.json"
