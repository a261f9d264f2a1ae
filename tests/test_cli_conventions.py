"""CLI conventions: --version, --help (content and time, torch and transformers blocked), -v after a
subcommand, --prompt-text, the shipped prompt by default, --json -, bench's default top-k."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from runprof.cli import main
from runprof.cli.bench import default_top_ks

from .conftest import REPO

BLOCKED = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, Block())
import runpy
sys.argv = ["runprof", *sys.argv[1:]]
runpy.run_module("runprof", run_name="__main__", alter_sys=True)
"""


def _blocked(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", BLOCKED, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    return proc, time.perf_counter() - t0


def test_help_shows_the_run_options_fast_without_torch():
    proc, elapsed = _blocked("--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--prompt FILE", "--prompt-text TEXT", "--max-new-tokens", "--json PATH", "--threads", "--full",
                   "--show", "--csv DIR", "--version"):
        assert option in proc.stdout, option
    for sub in ("count", "compare", "bench", "render", "diff"):
        assert f"\n  {sub} " in proc.stdout, sub
    assert elapsed < 1.0, f"--help took {elapsed:.2f} s"


def test_version_names_runprof_torch_and_transformers():
    proc, _ = _blocked("--version")  # read from the installed metadata: nothing imported
    assert proc.returncode == 0, proc.stderr
    import torch
    import transformers

    line = proc.stdout.strip()
    assert line.startswith("runprof 0.1.0 (torch ") and f"torch {torch.__version__.split('+')[0]}" in line
    assert f"transformers {transformers.__version__}" in line
    assert _blocked("count", "--version")[0].stdout.strip() == line


def test_verbose_after_a_subcommand(capsys):
    from runprof.cli import _with_command, build_parser

    parser = build_parser()
    for argv in (["count", "olmoe", "-v"], ["-v", "count", "olmoe"], ["bench", "-v"], ["diff", "a", "b", "-v"],
                 ["render", "r.json", "-v"], ["compare", "a", "b", "-v"], ["--prompt-text", "count", "-v"]):
        assert parser.parse_args(_with_command(argv)).verbose is True, argv
    assert parser.parse_args(_with_command(["count", "olmoe"])).verbose is False
    assert _with_command(["--prompt-text", "count"])[0] == "run"  # a value is not a subcommand
    assert main(["count", "olmoe", "-v"]) == 0


def test_prompt_text(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["--prompt-text", "def f(x):", "--max-new-tokens", "2", "--threads", "1", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["runtime"]["counts"]["generated"] == 2 and d["runtime"]["counts"]["prompt"] >= 3  # d, ef, ... f(x):
    assert main(["--prompt-text", "  ", "--max-new-tokens", "2"]) == 2
    assert "--prompt-text: the text is empty" in capsys.readouterr().err


def test_no_prompt_uses_the_shipped_prompt(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["--max-new-tokens", "2", "--threads", "1", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert any("shipped prompt" in note for note in d["extra"]["notes"])  # said with the report's notes
    assert d["runtime"]["counts"]["prompt"] == 194  # examples/prompt.txt, 194 tokens
    packaged = (REPO / "runprof" / "models" / "prompt.txt").read_text()
    assert packaged == (REPO / "examples" / "prompt.txt").read_text()


def test_json_to_standard_output(capsys):
    assert main(["--prompt-text", "def f(x):", "--max-new-tokens", "2", "--threads", "1", "--json", "-"]) == 0
    captured = capsys.readouterr()
    d = json.loads(captured.out)  # standard output holds the JSON alone
    assert d["kind"] == "run" and "verdict: measured = static" in captured.err  # the report went to stderr


def test_bench_default_top_k(capsys):
    assert default_top_ks(2, 8) == [1, 2, 4] and default_top_ks(4, 4) == [2, 4] and default_top_ks(3, 8) == [1, 3, 6]
    assert main(["bench", "--prompt-text", "def f(x):\n    return x", "--repeats", "1", "--warmup", "0",
                 "--max-new-tokens", "2", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert "no --top-k given: comparing k = 1,2,4" in captured.err
    rows = [line.split()[:2] for line in captured.out.splitlines() if line[:3].strip() in ("1", "2", "4")]
    assert rows == [["1", "1"], ["2", "1"], ["4", "1"]]


class _Terminal:
    """A stderr that says it is a terminal and keeps what is written to it."""

    def __init__(self, tty: bool) -> None:
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


def test_progress_while_building_is_drawn_on_a_terminal_only(monkeypatch):
    from runprof.cli.progress import Activity

    for tty in (True, False):
        err = _Terminal(tty)
        monkeypatch.setattr(sys, "stderr", err)
        with Activity(interval_s=0.01) as activity:
            activity.start("building mixtral with random weights on cpu")
            time.sleep(0.05)
        if tty:
            assert "\r" in err.text and "building mixtral with random weights on cpu: 00:00" in err.text
        else:
            assert err.text == "building mixtral with random weights on cpu ...\n"  # one line, no \r frames
