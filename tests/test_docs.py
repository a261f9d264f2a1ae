"""The runnable examples in runprof's docstrings and in the README run and print what they say."""
from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import runprof

REPO = Path(__file__).resolve().parents[1]
MODULES = sorted(m.name for m in pkgutil.walk_packages(runprof.__path__, "runprof.") if m.name != "runprof.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0


def _readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_examples_run():
    blocks = _readme_blocks()
    assert blocks, "the README has no Python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 - our own README


@pytest.mark.parametrize("script, args", [("track_generate.py", []), ("count_config.py", []),
                                          ("train_tiny_moe.py", ["--dry-run"])])
def test_examples_run(script, args):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "examples" / script), *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1",
                                                      "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
