"""The shape of the code: no import cycle inside runprof, small modules and functions, one door per backend."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "runprof"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _packages(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]  # runprof.x, runprof.x.y (never the root)


def import_graph() -> dict[str, set[str]]:
    """Module -> the runprof modules importing it runs (lazy imports inside functions included, imports under
    ``TYPE_CHECKING`` excluded). Importing ``a.b.c`` also runs the packages ``a.b`` above it, unless they are
    packages of the importing module itself (those are already initialised)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_lines(tree)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        own = set(_packages(name + ".x"))
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                if not base.startswith("runprof"):
                    continue
                targets.append(base)
                targets += [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
            elif isinstance(node, ast.Import):
                targets += [a.name for a in node.names if a.name.startswith("runprof")]
            for target in targets:
                if target in mods and target != name and target != "runprof":
                    graph[name].add(target)
                for pkg in _packages(target):
                    if pkg in mods and pkg not in own and pkg != name:
                        graph[name].add(pkg)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_runprof():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_small_modules_and_functions(path):
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long


def test_one_door_per_backend():
    """pynvml only in runprof/memory/, hooks only in runprof/tracking/, print only in the CLI and renderers."""
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        text = path.read_text(encoding="utf-8")
        if "import pynvml" in text:
            assert rel.startswith("memory/"), rel
        for hook in ("register_forward_pre_hook", "register_forward_hook", "register_full_backward_hook"):
            if f".{hook}(" in text:
                assert rel.startswith("tracking/"), (rel, hook)
        tree = ast.parse(text)
        prints = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"]
        if prints:
            assert rel.startswith(("cli/", "renderers/")) or rel == "__main__.py", rel
