"""The GPU checks run from a bare copy of the repository with nothing installed but torch and transformers.

Each test copies the tracked files to a temporary folder and runs the scripts there with ``python -S`` and
``PYTHONPATH`` = this interpreter's site-packages: ``-S`` skips the ``.pth`` files, so an editable install of
runprof cannot be what they import (the first test proves runprof is not importable that way). No GPU is
needed: without one every GPU check must SKIP with its reason and the script exit 0; ``--dry-run`` runs the
check bodies on the CPU.
"""
from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

FAKE_FLOPS = '''import json, sys
from pathlib import Path
out = Path(sys.argv[sys.argv.index("--out") + 1])
(out / "flops_gpu.json").write_text(json.dumps({"argv": sys.argv[1:]}))
print("SKIP flops.fake: called by the --flops hook", flush=True)
'''


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A copy of the tracked (and untracked, not ignored) files, and an environment that cannot see an install."""
    root = tmp_path_factory.mktemp("bare") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(src.read_bytes())
    (root / "benchmarks" / "flops_gpu.py").write_text(FAKE_FLOPS)
    python = tmp_path_factory.mktemp("bin") / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    paths = [p for p in site.getsitepackages() if Path(p).is_dir()]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OUT", "PYTHONHOME")}
    env.update(PYTHONPATH=os.pathsep.join(paths), PYTHON=str(python), CUDA_VISIBLE_DEVICES="")
    return {"root": root, "python": str(python), "env": env}


def _run(bare: dict, *argv: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), cwd=bare["root"], env=bare["env"], capture_output=True, text=True,
                          timeout=timeout)


def test_runprof_is_not_importable_without_the_copy(bare):
    """The control: torch and transformers import, runprof does not (run outside the copy: ``-c`` puts the
    current folder on sys.path)."""
    r = subprocess.run([bare["python"], "-c", "import torch, transformers\nimport runprof"], cwd="/",
                       env=bare["env"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "No module named 'runprof'" in r.stderr, r.stderr[-500:]


def test_without_a_gpu_every_check_skips_with_its_reason(bare, tmp_path):
    """The acceptance run: every line PASS/FAIL/SKIP, SKIPs with reasons, exit 0, JSON with the versions, and
    the --flops hook calls benchmarks/flops_gpu.py with the output folder."""
    out = tmp_path / "out"
    r = _run(bare, "bash", "benchmarks/gpu_checks.sh", str(out), "--quick", "--flops")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = [line for line in r.stdout.splitlines() if line.split(" ", 1)[0] in ("PASS", "FAIL", "SKIP")]
    assert not [line for line in lines if line.startswith("FAIL")], r.stdout
    names = {line.split(" ", 2)[1].rstrip(":") for line in lines}
    assert {"env", "cuda.ledger", "cuda.sync_free_region", "cuda.sync_free_hooks", "cuda.compare",
            "cuda.snapshot_transfers", "cuda.step_clock", "overhead", "flops.fake"} <= names, names
    for line in lines:
        if line.startswith("SKIP"):
            assert len(line.split(": ", 1)[1]) > 10, line  # a reason, not just a word
    assert "gpu_checks: 0 passed, 0 failed" in r.stdout and "skipped in" in r.stdout
    env = json.loads((out / "gpu_env.json").read_text())["environment"]
    assert {"device", "torch", "cuda", "driver", "transformers"} <= set(env)
    assert json.loads((out / "flops_gpu.json").read_text())["argv"] == ["--out", str(out), "--quick"]
    assert (out / "gpu_checks.log").read_text().count("SKIP ") == len([x for x in lines if x.startswith("SKIP")])


def test_cuda_checks_dry_run_on_the_cpu(bare, tmp_path):
    """The check bodies themselves, on the CPU: every check passes (so the first GPU run only adds the device)."""
    r = _run(bare, bare["python"], "benchmarks/cuda_checks.py", "--out", str(tmp_path), "--dry-run", "--quick")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    data = json.loads((tmp_path / "cuda_checks.json").read_text())
    assert [c["status"] for c in data["checks"]] == ["PASS"] * 6, r.stdout
    assert data["dry_run"] and data["environment"]["transformers"]
    assert str(bare["root"]) in _run(bare, bare["python"], "-c", (
        "import sys; sys.path.insert(0, 'benchmarks'); import gpu_common, runprof; print(runprof.__file__)"),
        timeout=120).stdout


def test_overhead_benchmark_times_and_reports_from_a_bare_copy(bare):
    """overhead.py imports from the copy and its timing, tool and report functions run (the multi-process
    driver is what the dry run of gpu_checks.sh covers; here one process is enough)."""
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import overhead, torch, runprof\n"
        "assert runprof.__file__.startswith(sys.argv[1]), runprof.__file__\n"
        "torch.set_num_threads(1)\n"
        "model = overhead.make_model('tiny', 'cpu'); ctxs, skipped = overhead.tools(model)\n"
        "ids = torch.randint(3, 100, (1, 8))\n"
        "s, edge, handle = overhead.one(model, ids, 4, ctxs['runprof_all'])\n"
        "rep = overhead.reported('runprof_all', handle)\n"
        "assert rep['experts_per_token'] == 2.0 and rep['active_params_per_token'] > 0, rep\n"
        "assert overhead.sync_free(model, ids) is None  # judged on CUDA only\n"
        "print('ok', round(s, 3), sorted(ctxs))\n"
    )
    r = _run(bare, bare["python"], "-c", code, str(bare["root"]))
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout[-1000:] + r.stderr[-2000:]
