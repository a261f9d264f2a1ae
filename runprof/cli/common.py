"""What every subcommand shares: the options defined once, exit codes, logging, writing JSON safely."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from enum import IntEnum
from pathlib import Path
from typing import Any, Iterable

from ..errors import InvalidArgumentError


class ExitCode(IntEnum):
    """``python -m runprof`` exit codes."""

    OK = 0
    DIFFERENT = 1  # compare: the checkpoints differ
    BAD_INPUT = 2  # a RunprofError: bad input, one line on stderr
    BUG = 3  # an unexpected exception: a runprof bug (-v shows the traceback)
    INTERRUPTED = 130


DTYPES = ("auto", "bf16", "fp16", "fp32")

FLAGS: dict[str, str] = {
    "device": "--device", "dtype": "--dtype", "num_layers": "--num-layers", "top_ks": "--top-k",
    "batch_sizes": "--batch-size", "repeats": "--repeats", "warmup": "--warmup", "max_new_tokens": "--max-new-tokens",
    "ignore": "--ignore", "base_prefix": "--base-prefix", "target_prefix": "--target-prefix", "rtol": "--rtol",
    "atol": "--atol", "directory": "--plot", "plot_format": "--plot-format", "dpi": "--dpi", "show": "--show",
}
"""The library's parameter names (:meth:`InvalidArgumentError.bad`) as this CLI's flags."""


def versions() -> str:
    """``runprof X (torch Y, transformers Z, Python W)``, read from the installed metadata (nothing imported)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return (f"runprof {__version__} (torch {of('torch')}, transformers {of('transformers')}, "
            f"Python {platform.python_version()})")


class _Version(argparse.Action):
    """``--version``: print :func:`versions` and exit (computed only when asked for)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the versions of runprof, torch and transformers and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(versions())
        parser.exit()


def add_verbose(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``-v`` and ``--version``: both work before and after a subcommand (the subcommand's ``-v`` never resets
    the main one's)."""
    p.add_argument("-v", "--verbose", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="log runprof's decisions to stderr; show the traceback of an unexpected error")
    p.add_argument("--version", action=_Version)


def add_prompt(p: argparse.ArgumentParser, *, lines: bool = True) -> None:
    """``--prompt FILE`` or ``--prompt-text TEXT``; neither: runprof's shipped prompt."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--prompt", metavar="FILE", help="text file with the prompt (default: runprof's shipped prompt, "
                                                    "a piece of Python source)")
    g.add_argument("--prompt-text", metavar="TEXT", help='the prompt itself, e.g. --prompt-text "def f(x):"')
    if lines:
        p.add_argument("--lines", action="store_true", help="one prompt per line (a batch)")


def add_report(p: argparse.ArgumentParser, *, sections: Iterable[str] | None = None) -> None:
    """``--full``, ``--show`` (where the report has named sections) and ``--csv DIR``."""
    p.add_argument("--full", action="store_true", help="every detail table after the summary")
    if sections is not None:
        p.add_argument("--show", metavar="SECTION[,...]", default="",
                       help=f"detail tables to add after the summary: {', '.join(sections)} (comma-separated)")
    p.add_argument("--csv", metavar="DIR", help="write the report's tables as CSV files into DIR (one per table)")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="PATH", help="write the result as JSON to PATH ('-' for standard output)")


def add_html(p: argparse.ArgumentParser, what: str = "the report") -> None:
    p.add_argument("--html", metavar="PATH",
                   help=f"write {what} as one self-contained HTML file to PATH (opens offline in any browser)")


def add_device(p: argparse.ArgumentParser, *, choices: Iterable[str] | None = None, default: str = "auto") -> None:
    p.add_argument("--device", default=default, choices=list(choices) if choices else None,
                   help=f"where to run: {', '.join(choices) if choices else 'cpu, cuda, cuda:N or auto'} "
                        f"(default {default})")


def add_dtype(p: argparse.ArgumentParser, help: str = "weights' dtype (auto: the checkpoint's own)") -> None:  # noqa: A002
    p.add_argument("--dtype", default="auto", choices=DTYPES, help=help)


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's own; 1 is often fastest for small models on a busy machine)")


def configure_logging(verbose: bool) -> None:
    """The one place logging is configured (the library only logs to ``logging.getLogger("runprof")``).

    Without ``-v`` transformers' own warnings are quiet (a bad config is one runprof line, not three
    transformers warnings before it); when stderr is not a terminal no library draws progress bars (no ``\r``
    frames in a redirected log). Both are environment defaults read when those libraries are first imported.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="runprof: %(message)s")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def set_threads(n: int | None) -> None:
    """``--threads N``: torch's CPU thread count for this process (1 <= N <= 4 x the CPUs this process may use;
    None leaves torch's default). Far more threads than cores only slows torch, and a million crash it."""
    if n is None:
        return
    if n < 1:
        raise InvalidArgumentError(f"--threads {n}: must be at least 1")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n > 4 * cpus:
        raise InvalidArgumentError(f"--threads {n}: this process may use {cpus} CPU{'s' if cpus != 1 else ''}; "
                                   f"use at most {4 * cpus} threads (1 is often fastest for small models)")
    import torch

    torch.set_num_threads(n)


def report_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``render`` options of ``--full`` / ``--show``."""
    out: dict[str, Any] = {"full": True} if getattr(args, "full", False) else {}
    show = getattr(args, "show", None)
    if show:
        out["show"] = [s.strip() for s in show.split(",") if s.strip()]
    return out


def check_csv(folder: str | None, inputs: Iterable[str | os.PathLike[str] | None] = ()) -> None:
    """``--csv DIR``, before any work: a folder (created when missing), not an existing file, not an input folder
    or runprof's own, and writable."""
    if folder is None:
        return
    if not str(folder).strip() or "\x00" in str(folder):
        raise InvalidArgumentError(f"--csv {folder!r}: give a folder path (it is created when missing)")
    try:
        target = Path(folder).expanduser().resolve()
        if target.exists() and not target.is_dir():
            raise InvalidArgumentError(f"--csv {folder}: is a file; give a folder (it is created when missing)")
        _check_inputs("--csv", str(folder), target, inputs)
        if _inside(target, PACKAGE_DIR):
            raise InvalidArgumentError(f"--csv {folder}: is inside runprof's own folder {PACKAGE_DIR}; write it "
                                       "somewhere else")
        _check_writable("--csv", str(folder), target / "table.csv")
        target.mkdir(parents=True, exist_ok=True)  # made now: a folder that cannot be made is refused before the work
    except OSError as e:
        raise InvalidArgumentError(f"--csv {folder}: cannot use this path ({e.strerror or e})") from e


def write_csv(folder: str | None, result: Any) -> None:
    """``--csv DIR``: each table of ``result`` (:func:`runprof.results.frames.records`) as ``DIR/NAME.csv``
    (written atomically, like :func:`write_text`; an empty cell is an unknown value)."""
    if folder is None:
        return
    import csv
    import io

    from ..results.frames import tables

    target = Path(folder).expanduser()
    if target.exists() and not target.is_dir():
        raise InvalidArgumentError(f"--csv {folder}: is a file; give a folder (it is created when missing)")
    for name, make in tables(result).items():
        rows = make()
        fields = list(dict.fromkeys(k for row in rows for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        write_text("--csv", str(target / f"{name}.csv"), buf.getvalue())


def say(message: str) -> None:
    """A progress or status line on stderr (never on stdout, which holds the report)."""
    print(message, file=sys.stderr)


PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""runprof's own folder (the shipped model and configs): never an output."""


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _input_folder(source: Path) -> Path | None:
    """The folder whose files an input reads: a directory itself, or the folder of a checkpoint index
    (``model.safetensors.index.json`` names shards beside it)."""
    if source.is_dir():
        return source
    return source.parent if source.name.endswith(".index.json") else None


def _check_writable(flag: str, path: str, target: Path) -> None:
    """The nearest existing folder above ``target`` must be a writable directory: a ``--json`` that cannot be
    written is refused before the work, not after it."""
    above = target.parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise InvalidArgumentError(f"{flag} {path}: {above} is a file, not a folder; give a path in a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"{flag} {path}: cannot write in {above} (permission denied); give another path")


def _check_inputs(flag: str, path: str, target: Path, inputs: Iterable[str | os.PathLike[str] | None]) -> None:
    for given in inputs:
        try:
            if given is None or not str(given).strip() or not Path(given).expanduser().exists():
                continue
            source = Path(given).expanduser().resolve()
        except (OSError, ValueError):  # an input the system cannot look at is refused by its own command
            continue
        folder = _input_folder(source)
        if target == source or (folder is not None and _inside(target, folder)) or (
                target.exists() and os.path.samefile(target, source)):
            raise InvalidArgumentError(f"{flag} {path}: would overwrite the input {given}; write it somewhere else")


def check_output(flag: str, path: str | None, inputs: Iterable[str | os.PathLike[str] | None] = ()) -> None:
    """Refuse an output path that is empty, a directory, one of the inputs (symbolic or hard links included),
    inside an input folder (a model directory, or the folder of a checkpoint index), inside runprof's own folder
    (the shipped model), too long, or in a folder that cannot be written (checked before any work, so a bad
    ``--json`` costs nothing and overwrites nothing)."""
    if path is None or path == "-":
        return
    if not str(path).strip():
        raise InvalidArgumentError(f"{flag} '': give a file path, or - for standard output")
    if "\x00" in str(path):
        raise InvalidArgumentError(f"{flag} {path!r}: a path cannot hold a NUL character")
    shown = str(path) if len(str(path)) <= 80 else str(path)[:77] + "..."
    long = next((part for part in Path(path).parts if len(os.fsencode(part)) > 255), None)
    if long is not None or len(os.fsencode(str(path))) >= 4096:
        raise InvalidArgumentError(f"{flag} {shown}: {'a name' if long else 'the path'} is longer than the system "
                                   f"allows ({255 if long else 4095} bytes); give a shorter one")
    try:
        target = Path(path).expanduser().resolve()
        if target.is_dir():
            raise InvalidArgumentError(f"{flag} {path}: is a directory; give a file path such as "
                                       f"{Path(path) / 'out.json'}")
        _check_inputs(flag, str(path), target, inputs)
        if _inside(target, PACKAGE_DIR):
            raise InvalidArgumentError(f"{flag} {path}: is inside runprof's own folder {PACKAGE_DIR} (the shipped "
                                       "model and configs); write it somewhere else")
        _check_writable(flag, str(path), target)
    except OSError as e:  # a loop of symbolic links, a folder that cannot be searched, ...
        raise InvalidArgumentError(f"{flag} {shown}: cannot use this path ({e.strerror or e})") from e


def _mode(target: Path) -> int:
    """The permissions a new file gets here (the umask's), or the replaced file's own."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def check_html(path: str | None, inputs: Iterable[str | os.PathLike[str] | None] = (), json_path: str | None = None) \
        -> None:
    """``--html PATH``: a file path (not ``-``), not an input, not the ``--json`` file (see :func:`check_output`)."""
    if path is None:
        return
    if path == "-":
        raise InvalidArgumentError("--html -: an HTML report is a file; give a path such as report.html")
    check_output("--html", path, inputs)
    if json_path not in (None, "-") and Path(json_path).expanduser().resolve() == Path(path).expanduser().resolve():
        raise InvalidArgumentError(f"--html {path}: is also the --json file; give each its own path")


def write_json(flag: str, path: str | None, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (:func:`write_text`), or to stdout for ``-``."""
    if path is None:
        return
    text = json.dumps(data, indent=2) + "\n"
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_text(flag, path, text)


def write_text(flag: str, path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file in the same folder, synced, then renamed over the
    target, through any symbolic link: an interrupted write leaves the old file or none, and no temporary file);
    a missing folder is created and said so."""
    target = Path(path).expanduser().resolve()
    try:
        if not target.parent.exists():
            target.parent.mkdir(parents=True)
            say(f"created folder {target.parent}")
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, _mode(target))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise InvalidArgumentError(f"{flag} {path}: cannot write ({e.strerror or e})") from e
    say(f"wrote {target}")


__all__ = ["DTYPES", "FLAGS", "ExitCode", "add_device", "add_dtype", "add_html", "add_json", "add_prompt",
           "add_report", "add_threads", "add_verbose", "check_csv", "check_html", "check_output",
           "configure_logging", "report_options", "say", "set_threads", "versions", "write_csv", "write_json",
           "write_text"]
