"""The cuda-marked tests (``pytest -m cuda tests/``), one ``PASS``/``FAIL``/``SKIP`` line per test, where pytest is
importable; else one ``SKIP`` line naming why (``cuda_checks.py`` runs the same checks without pytest).

pytest is not part of what the GPU image is promised to hold. It can travel as wheels (see
``/work/.library/device/README.md``'s ``.whl`` recipe; ``gpu_checks.sh`` installs any ``.whl/*.whl`` it finds
into a temporary folder first), but no check depends on it.

    python benchmarks/cuda_pytest.py --out DIR     # DIR/cuda_pytest.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from gpu_common import ROOT, Report


class Recorder:
    """A pytest plugin: one report line per test, as each test ends."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.started: dict[str, float] = {}

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self.started[nodeid] = time.perf_counter()

    def pytest_runtest_logreport(self, report: Any) -> None:
        seconds = time.perf_counter() - self.started.get(report.nodeid, time.perf_counter())
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.report.record(report.nodeid, "SKIP", reason.removeprefix("Skipped: "), seconds)
        elif report.failed:
            print(report.longrepr, file=sys.stderr, flush=True)
            crash = getattr(getattr(report.longrepr, "reprcrash", None), "message", None)
            first = crash or (str(report.longrepr).strip().splitlines() or ["failed"])[-1]
            self.report.record(report.nodeid, "FAIL", f"{report.when}: {first.splitlines()[0][:300]}", seconds,
                               {"longrepr": str(report.longrepr)[-4000:]})
        elif report.when == "call":
            self.report.record(report.nodeid, "PASS", "passed", seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for cuda_pytest.json")
    args = ap.parse_args(argv)
    report = Report(args.out / "cuda_pytest.json", "cuda_pytest.py")
    try:
        import pytest
    except ImportError as e:
        report.record("cuda-pytest", "SKIP", f"pytest is not importable here ({e}); cuda_checks.py covers the same "
                      "checks without it (carry pytest as wheels in .whl/ to run the tests themselves)", 0.0)
        return 0
    t0 = time.perf_counter()
    # only the files that hold a cuda-marked test: collecting every test module costs more than running these
    files = [str(p) for p in sorted((ROOT / "tests").glob("test_*.py")) if "mark.cuda" in p.read_text()]
    # no terminal reporter: the Recorder prints one line per test (and a failure's traceback to stderr)
    argv = ["-m", "cuda", "-p", "no:cacheprovider", "-p", "no:terminal", "-o", "addopts=", "--rootdir", str(ROOT)]
    code = pytest.main([*argv, *files], plugins=[Recorder(report)])
    statuses = [c["status"] for c in report.data["checks"]]
    if code not in (0, 5) and "FAIL" not in statuses:  # a collection or internal error, not a test's failure
        report.record("cuda-pytest", "FAIL", f"pytest exited {int(code)} before running the tests",
                      time.perf_counter() - t0)
    elif not statuses:
        report.record("cuda-pytest", "SKIP", "no cuda-marked test was collected", time.perf_counter() - t0)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
