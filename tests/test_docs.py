"""The runnable examples in runprof's docstrings run and print what they say."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "runprof.static.counting",
    "runprof.moe.discovery",
    "runprof.moe.topk",
    "runprof.tracking.tracker",
    "runprof.memory",
    "runprof.models.resolve",
    "runprof.models.loading",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0
