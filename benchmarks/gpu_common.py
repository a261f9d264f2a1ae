"""What the GPU check scripts share: the repository on ``sys.path`` (they run from a bare copy, runprof not
installed), the machine's description, one ``PASS``/``FAIL``/``SKIP <reason>`` line per check, and a JSON
file per script that is rewritten after every check (a run cut short still leaves what it measured).

Imports only the standard library and torch at module level: the GPU image has torch, transformers,
accelerate, safetensors, tabulate, nvidia-ml-py and their own dependencies, and maybe nothing else.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # a bare copy of the repository: runprof is imported from here, not installed
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the GPU machine reaches no network
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402 - after the path and environment set-up above

STATUSES = ("PASS", "FAIL", "SKIP")


class Skip(Exception):
    """Raised by a check that cannot run here; its message is the reason printed after ``SKIP``."""


class CheckFailed(Exception):
    """Raised by a check whose measurement contradicts what it expects; the message says what and by how much."""


def expect(condition: bool, message: str) -> None:
    """``raise CheckFailed(message)`` unless ``condition`` (checks never use ``assert``: ``python -O`` drops it)."""
    if not condition:
        raise CheckFailed(message)


def _nvidia_smi() -> dict[str, Any]:
    query = "name,driver_version,memory.total"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError) as e:
        return {"driver": None, "driver_unknown_because": f"nvidia-smi: {type(e).__name__}: {e}"[:200]}
    first = [f.strip() for f in out[0].split(",")] if out else []
    if len(first) != 3:
        return {"driver": None, "driver_unknown_because": f"nvidia-smi printed {out[:1]!r}"}
    return {"driver": first[1], "nvidia_smi_gpus": [line.strip() for line in out]}


def environment() -> dict[str, Any]:
    """Device name, torch, CUDA, driver and transformers versions, and the host, for every result JSON."""
    try:
        import transformers

        tf_version: str | None = transformers.__version__
    except Exception as e:  # noqa: BLE001 - reported, not fatal: the checks that need it fail on their own
        tf_version = f"unimportable: {type(e).__name__}: {e}"[:200]
    env: dict[str, Any] = {
        "python": platform.python_version(), "executable": sys.executable, "host": platform.node(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "transformers": tf_version, "cuda_available": torch.cuda.is_available(),
        "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    if env["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        env.update(device=torch.cuda.get_device_name(0), device_memory_bytes=int(props.total_memory),
                   compute_capability=f"{props.major}.{props.minor}", **_nvidia_smi())
    else:
        env.update(device=f"cpu ({platform.machine()})", driver=None)
    return env


def no_gpu_reason() -> str | None:
    """Why there is no CUDA GPU to check on, or None when there is one."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build (torch.version.cuda is None): no CUDA GPU here"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False: no CUDA GPU here"
    return None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file, even if this process is killed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


class Report:
    """One script's checks: prints a line per check as it ends and rewrites ``path`` after each."""

    def __init__(self, path: Path, script: str, *, dry_run: bool = False, **meta: Any) -> None:
        self.path, self.failed = path, 0
        self.data: dict[str, Any] = {"script": script, "dry_run": dry_run, "environment": environment(),
                                     **meta, "checks": []}
        self.prefix = "[dry run, cpu] " if dry_run else ""
        write_json(self.path, self.data)

    def record(self, name: str, status: str, detail: str, seconds: float, data: Any = None) -> None:
        if status not in STATUSES:
            raise ValueError(status)
        self.failed += status == "FAIL"
        self.data["checks"].append({"name": name, "status": status, "detail": detail, "seconds": round(seconds, 3),
                                    "data": data})
        write_json(self.path, self.data)
        sep = ": " if status == "SKIP" else " "
        print(f"{status} {name}{sep}{self.prefix}{detail} ({seconds:.1f} s)", flush=True)

    def run(self, name: str, check: Callable[[], tuple[str, Any]]) -> None:
        """Run ``check`` (returning ``(detail, data)``); Skip -> SKIP, CheckFailed or any error -> FAIL."""
        t0 = time.perf_counter()
        try:
            detail, data = check()
        except Skip as e:
            self.record(name, "SKIP", str(e), time.perf_counter() - t0)
        except CheckFailed as e:
            self.record(name, "FAIL", str(e), time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - a check that breaks is a failed check, and the next one still runs
            tb = traceback.format_exc(limit=-4)
            print(tb, file=sys.stderr, flush=True)
            self.record(name, "FAIL", f"{type(e).__name__}: {e}"[:500], time.perf_counter() - t0, {"traceback": tb})
        else:
            self.record(name, "PASS", detail, time.perf_counter() - t0, data)


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/gpu_common.py --out DIR``: the machine's description as ``DIR/gpu_env.json`` and
    one line (PASS with a GPU, SKIP with the reason without one)."""
    import argparse

    ap = argparse.ArgumentParser(description="describe this machine for the GPU checks")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    report = Report(args.out / "gpu_env.json", "gpu_common.py")
    env = report.data["environment"]
    versions = f"torch {env['torch']} (CUDA {env['cuda']}), transformers {env['transformers']}, python {env['python']}"
    missing = no_gpu_reason()
    if missing:
        report.record("env", "SKIP", f"{missing}; {versions}", 0.0, env)
    else:
        gib = env["device_memory_bytes"] / 2**30
        device = f"{env['device']} x{env['device_count']} ({gib:.0f} GiB, sm {env['compute_capability']})"
        report.record("env", "PASS", f"{device}, driver {env['driver']}, {versions}", 0.0, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
