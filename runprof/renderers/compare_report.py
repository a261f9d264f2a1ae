"""Text report of a :class:`~runprof.snapshots.result.CompareResult` (the ``compare`` command's output).

Sections in the order conversion checks print them, each with its count, then the skipped tensors and
the totals. A fused expert tensor whose values differ gets one row per differing expert
(``model.layers.0.mlp.experts.gate_up_proj[3]``).

>>> from runprof.snapshots import CompareResult
>>> print(render_compare(CompareResult(base="a", target="b")).splitlines()[-1])
result: identical (0 differences)
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

from tabulate import tabulate

from ..snapshots.result import CompareResult, ValueMismatch
from .format import human_bytes, n

TITLES = {
    "only_in_base": "Tensors only in the base model",
    "only_in_target": "Tensors only in the target model",
    "shape_mismatch": "Shape mismatched tensors",
    "dtype_mismatch": "Dtype mismatched tensors",
    "value_mismatch": "Value mismatched tensors",
}


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _diff(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    if not rows:
        return "  none"
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def _value_rows(entries: tuple[ValueMismatch, ...]) -> list[list[str]]:
    rows = []
    for e in entries:
        if e.experts:
            per_expert = e.numel // e.shape[0]
            for x in e.experts:
                rows.append([f"{e.name}[{x.index}]", _shape(e.shape[1:]), e.dtype, _diff(x.max_abs_diff),
                             f"{n(x.differing_elements)} of {n(per_expert)}"])
        else:
            count = "-" if e.differing_elements is None else f"{n(e.differing_elements)} of {n(e.numel)}"
            rows.append([e.name, _shape(e.shape), e.dtype, _diff(e.max_abs_diff), count])
    return rows


def _sections(r: CompareResult) -> list[tuple[str, int, str]]:
    digest_only = any(e.max_abs_diff is None for e in r.value_mismatch)
    return [
        ("only_in_base", len(r.only_in_base),
         _table([[e.name, _shape(e.shape), e.dtype] for e in r.only_in_base], ["name", "shape", "dtype"])),
        ("only_in_target", len(r.only_in_target),
         _table([[e.name, _shape(e.shape), e.dtype] for e in r.only_in_target], ["name", "shape", "dtype"])),
        ("shape_mismatch", len(r.shape_mismatch),
         _table([[e.name, _shape(e.base_shape), _shape(e.target_shape), e.base_dtype, e.target_dtype]
                 for e in r.shape_mismatch], ["name", "base shape", "target shape", "base dtype", "target dtype"])),
        ("dtype_mismatch", len(r.dtype_mismatch),
         _table([[e.name, _shape(e.shape), e.base_dtype, e.target_dtype, _diff(e.max_abs_diff),
                  "-" if e.differing_elements is None else n(e.differing_elements)] for e in r.dtype_mismatch],
                ["name", "shape", "base dtype", "target dtype", "max abs diff", "differing elements"])),
        ("value_mismatch", len(r.value_mismatch),
         _table(_value_rows(r.value_mismatch), ["name", "shape", "dtype", "max abs diff", "differing elements"])
         + ("\n  (- : only digests were at hand; values differ, by how much is unknown)" if digest_only else "")),
    ]


def _prefix_hint(names: list[str], others: set[str]) -> str | None:
    """The most common ``P`` such that ``P + other == name`` for one-sided names (a key-prefix mismatch)."""
    found: Counter[str] = Counter()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts)):
            if ".".join(parts[i:]) in others:
                found[".".join(parts[:i]) + "."] += 1
                break
    return found.most_common(1)[0][0] if found else None


def hints(r: CompareResult) -> list[str]:
    """Suggestions read off the one-sided names: a prefix option, or --fuse-experts."""
    base = [e.name for e in r.only_in_base]
    target = [e.name for e in r.only_in_target]
    out = []
    for names, others, option in ((base, set(target), "--base-prefix"), (target, set(base), "--target-prefix")):
        prefix = _prefix_hint(names, others)
        if prefix:
            out.append(f"hint: names differ by a prefix; try {option} {prefix}")
    fused = re.compile(r"\.experts\.(gate_up_proj|down_proj)$")
    per_expert = re.compile(r"\.experts\.\d+\.\w+\.weight$")
    sides = [any(fused.search(n) for n in side) for side in (base, target)]
    split = [any(per_expert.search(n) for n in side) for side in (base, target)]
    if (sides[0] and split[1]) or (sides[1] and split[0]):
        out.append("hint: one side stores experts one by one (experts.N.w1), the other fused "
                   "(experts.gate_up_proj); try --fuse-experts")
    return out


def render_compare(r: CompareResult) -> str:
    """The full report: header, the five sections, skipped tensors, totals and the verdict line."""
    tol = "exact" if r.rtol == 0 and r.atol == 0 else f"|t - b| <= {r.atol:g} + {r.rtol:g} * |b|"
    out = [f"base:   {r.base}", f"target: {r.target}", f"values: {tol}"]
    sections = _sections(r)
    for key, count, table in sections:
        out += ["", f"{TITLES[key]} ({count})", table]
    if r.recomputable:
        out += ["", f"Recomputable or tied tensors on one side only, not differences ({len(r.recomputable)})",
                _table([[s.name, s.side, s.reason] for s in r.recomputable], ["name", "side", "reason"])]
    if r.ignored:
        out += ["", f"Ignored tensors ({len(r.ignored)}): " + r.ignored[0].reason,
                _table([[s.name, s.side] for s in r.ignored], ["name", "side"])]
    t = r.totals
    rows = [
        ["tensors in base / target", f"{n(t.base_tensors)} / {n(t.target_tensors)}"],
        ["bytes in base / target", f"{human_bytes(t.base_bytes)} / {human_bytes(t.target_bytes)}"],
        ["compared by name", n(t.compared)],
        ["equal", n(t.equal)],
    ]
    if t.values_unknown:
        rows.append(["values unknown (no data, e.g. meta tensors)", n(t.values_unknown)])
    rows += [[TITLES[key].lower().replace("tensors only", "only"), n(count)] for key, count, _ in sections]
    rows += [["recomputable / tied (not differences)", n(len(r.recomputable))], ["ignored", n(len(r.ignored))]]
    out += ["", "Totals", tabulate(rows, tablefmt="plain", disable_numparse=True, colalign=("left", "right"))]
    suggestions = hints(r)
    if suggestions:
        out += [""] + suggestions
    if r.verdict == "not_proven":
        k = r.totals.values_unknown
        whose = "tensor's" if k == 1 else "tensors'"
        out += ["", f"result: not proven ({n(k)} {whose} values unknown)"]
    else:
        out += ["", f"result: {r.verdict} ({r.differences} difference{'s' if r.differences != 1 else ''})"]
    return "\n".join(out)
