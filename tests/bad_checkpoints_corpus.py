"""The corpus of bad checkpoints used by ``test_bad_checkpoints.py``: ``CASES`` maps a case name to
``(build, expected)``; ``build(folder, base)`` writes the target in ``folder`` (next to a good base file) and
returns it; ``expected`` is a substring of the one-line error, or ``"verdict:<identical|different|not_proven>"``.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

TENSORS = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4, dtype=torch.float16)}
# safetensors sorts by name: a is 2 x 3 float32 = 24 bytes at [0, 24), b is 4 float16 = 8 bytes at [24, 32)
A, B = {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, {"dtype": "F16", "shape": [4], "data_offsets": [24, 32]}
BODY = TENSORS["a"].numpy().tobytes() + TENSORS["b"].numpy().tobytes()
MARKER = "runprof_corpus_code_ran"

Build = Callable[[Path, Path], Path]  # (case folder, base file) -> the target to compare against the base
CASES: dict[str, tuple[Build, str]] = {}  # name -> (build, expected: an error substring or "verdict:<v>")


def case(name: str, expected: str) -> Callable[[Build], Build]:
    def register(build: Build) -> Build:
        assert name not in CASES
        CASES[name] = (build, expected)
        return build
    return register


def raw_safetensors(path: Path, header: object, body: bytes = BODY, length: int | None = None) -> Path:
    """A safetensors file written by hand: 8-byte little-endian header length, JSON header, data."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head) if length is None else length) + head + body)
    return path


def good_file(folder: Path) -> bytes:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(TENSORS, str(folder / "good.safetensors"))
    data = (folder / "good.safetensors").read_bytes()
    (folder / "good.safetensors").unlink()
    return data


def index_dir(root: Path, weight_map: object, *, name: str = "model.safetensors.index.json",
              text: str | None = None) -> Path:
    """A folder holding only a shard index (plus whatever the case adds)."""
    folder = root / "target"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}) if text is None else text)
    return folder


# --- safetensors headers -------------------------------------------------------------------------
CORRUPT = "truncated or corrupt safetensors file"
_HEADERS: dict[str, tuple[object, bytes, int | None]] = {
    "bad dtype": ({"a": {**A, "dtype": "Q7"}, "b": B}, BODY, None),
    "lowercase dtype": ({"a": A, "b": {**B, "dtype": "f16"}}, BODY, None),
    "missing dtype": ({"a": A, "b": {"shape": [4], "data_offsets": [24, 32]}}, BODY, None),
    "missing offsets": ({"a": A, "b": {"dtype": "F16", "shape": [4]}}, BODY, None),
    "negative offset": ({"a": {**A, "data_offsets": [-8, 24]}, "b": B}, BODY, None),
    "float offsets": ({"a": A, "b": {**B, "data_offsets": [24.0, 32.0]}}, BODY, None),
    "reversed range": ({"a": A, "b": {**B, "data_offsets": [32, 24]}}, BODY, None),
    "overlapping ranges": ({"a": {**A, "data_offsets": [0, 24]}, "b": {**B, "data_offsets": [16, 24]}}, BODY, None),
    "range past the end": ({"a": A, "b": {**B, "data_offsets": [24, 40]}}, BODY, None),
    "gap between tensors": ({"b": {**B, "data_offsets": [0, 8]}, "a": {**A, "data_offsets": [16, 40]}},
                            BODY + bytes(8), None),
    "shape lies (more)": ({"a": {**A, "shape": [2, 4]}, "b": B}, BODY, None),
    "shape lies (fewer)": ({"a": {**A, "shape": [2, 2]}, "b": B}, BODY, None),
    "negative shape": ({"a": A, "b": {**B, "shape": [-4]}}, BODY, None),
    "shape not a list": ({"a": A, "b": {**B, "shape": "4"}}, BODY, None),
    "overflowing shape": ({"a": A, "b": {**B, "shape": [2**40, 2**40]}}, BODY, None),
    "header is a list": ([1, 2], BODY, None),
    "header is a string": ("weights", BODY, None),
    "non-JSON header": (b"hello, not json", BODY, None),
    "invalid UTF-8 header": (b'{"a\xff": 1}', BODY, None),
    "metadata not strings": ({"a": A, "b": B, "__metadata__": {"format": 1}}, BODY, None),
    "metadata a list": ({"a": A, "b": B, "__metadata__": [1]}, BODY, None),
    "trailing bytes": ({"a": A, "b": B}, BODY + bytes(16), None),
    "header length 0": ({"a": A, "b": B}, BODY, 0),
    "header length past the file": ({"a": A, "b": B}, BODY, 10**6),
    "huge header length": ({"a": A, "b": B}, BODY, 2**62),
}
for _name, (_header, _body, _length) in _HEADERS.items():
    case(f"safetensors: {_name}", CORRUPT)(
        lambda root, base, h=_header, b=_body, n=_length: raw_safetensors(root / "t.safetensors", h, b, n))


@case("safetensors: truncated by one byte", CORRUPT)
def _(root: Path, base: Path) -> Path:
    (root / "t.safetensors").write_bytes(good_file(root)[:-1])
    return root / "t.safetensors"


@case("safetensors: truncated to half", CORRUPT)
def _(root: Path, base: Path) -> Path:
    data = good_file(root)
    (root / "t.safetensors").write_bytes(data[: len(data) // 2])
    return root / "t.safetensors"


@case("safetensors: header length only", CORRUPT)
def _(root: Path, base: Path) -> Path:
    (root / "t.safetensors").write_bytes(good_file(root)[:8])
    return root / "t.safetensors"


@case("safetensors: 7 bytes", CORRUPT)
def _(root: Path, base: Path) -> Path:
    (root / "t.safetensors").write_bytes(b"\x01" * 7)
    return root / "t.safetensors"


@case("safetensors: empty file", CORRUPT)
def _(root: Path, base: Path) -> Path:
    (root / "t.safetensors").write_bytes(b"")
    return root / "t.safetensors"


@case("safetensors: a zip .bin renamed", CORRUPT)
def _(root: Path, base: Path) -> Path:
    torch.save(TENSORS, root / "t.safetensors")
    return root / "t.safetensors"


@case("safetensors: dtype F4 (not comparable)", "which runprof cannot compare")
def _(root: Path, base: Path) -> Path:
    return raw_safetensors(root / "t.safetensors", {"a": A, "b": {"dtype": "F4", "shape": [16], "data_offsets": [24, 32]}})


@case("safetensors: no tensors", "holds no tensors")
def _(root: Path, base: Path) -> Path:
    save_file({}, str(root / "t.safetensors"))
    return root / "t.safetensors"


# --- shard indexes: types --------------------------------------------------------------------------
for _name, _wm, _expected in [
    ("weight_map a list", ["a", "b"], "'weight_map' is an array"),
    ("weight_map null", None, "'weight_map' is null"),
    ("weight_map a string", "model.safetensors", "'weight_map' is a string"),
    ("weight_map empty", {}, "'weight_map' is empty"),
    ("shard a number", {"a": 5}, "weight_map['a'] is the number 5"),
    ("shard null", {"a": None}, "weight_map['a'] is null"),
    ("shard a list", {"a": ["model.safetensors"]}, "weight_map['a'] is an array"),
    ("shard empty", {"a": ""}, "weight_map['a'] is an empty string"),
    ("shard with a NUL byte", {"a": "model\x00.safetensors"}, "contains a NUL byte"),
    ("shard with a wrong suffix", {"a": "model.txt"}, "is not a .safetensors"),
    ("shard missing", {"a": "model-00001-of-00002.safetensors"}, "names shard model-00001-of-00002.safetensors"),
    ("shard is the index", {"a": "model.safetensors.index.json", "b": "model.safetensors.index.json"},
     "is the index itself"),
]:
    case(f"index: {_name}", _expected)(lambda root, base, wm=_wm: index_dir(root, wm))

for _name, _text, _expected in [
    ("not JSON", "{weight_map: oops", "not valid JSON"),
    ("empty file", "", "not valid JSON"),
    ("top level a list", "[1, 2]", "it holds an array"),
    ("no weight_map key", '{"metadata": {}}', "no 'weight_map' key"),
]:
    case(f"index: {_name}", _expected)(lambda root, base, t=_text: index_dir(root, None, text=t))


@case("index: invalid UTF-8", "not valid JSON")
def _(root: Path, base: Path) -> Path:
    folder = index_dir(root, {})
    (folder / "model.safetensors.index.json").write_bytes(b'{"weight_map": {"a": "\xff"}}')
    return folder


# --- shard indexes: paths outside the folder ------------------------------------------------------
OUTSIDE = "outside the checkpoint folder"
for _name, _shard, _expected in [
    ("escape through ..", "../../base/model.safetensors", "goes through .."),
    ("escape inside a subfolder", "sub/../../base/model.safetensors", "goes through .."),
    ("absolute path", "BASE", "is an absolute path"),
    ("/etc/passwd", "/etc/passwd", "is an absolute path"),
]:
    def _escape(root: Path, base: Path, shard: str = _shard) -> Path:
        target = str(base) if shard == "BASE" else shard
        return index_dir(root, {"a": target, "b": target})
    case(f"index: {_name}", _expected)(_escape)


@case("index: symlinked shard leading outside", OUTSIDE)
def _(root: Path, base: Path) -> Path:
    folder = index_dir(root, {"a": "model.safetensors", "b": "model.safetensors"})
    (folder / "model.safetensors").symlink_to(base)
    return folder


@case("index: symlinked shard to /etc/passwd", OUTSIDE)
def _(root: Path, base: Path) -> Path:
    folder = index_dir(root, {"a": "passwd.safetensors"})
    (folder / "passwd.safetensors").symlink_to("/etc/passwd")
    return folder


@case("index: symlinked shard to the index", "names the index itself")
def _(root: Path, base: Path) -> Path:
    folder = index_dir(root, {"a": "model.safetensors"})
    (folder / "model.safetensors").symlink_to(folder / "model.safetensors.index.json")
    return folder


@case("index: symlink loop", "names shard")
def _(root: Path, base: Path) -> Path:
    folder = index_dir(root, {"a": "loop.safetensors"})
    (folder / "loop.safetensors").symlink_to(folder / "loop.safetensors")
    return folder


@case("index: .bin index escaping", "goes through ..")
def _(root: Path, base: Path) -> Path:
    return index_dir(root, {"a": "../../base/pytorch_model.bin"}, name="pytorch_model.bin.index.json")


@case("index: mixed formats", "mixes .safetensors and PyTorch shards")
def _(root: Path, base: Path) -> Path:
    folder = index_dir(root, {"a": "model-1.safetensors", "b": "model-2.bin"})
    save_file({"a": TENSORS["a"]}, str(folder / "model-1.safetensors"))
    torch.save({"b": TENSORS["b"]}, folder / "model-2.bin")
    return folder


@case("index: tensor absent from its shard", "the index names tensor 'c' but the shard lacks it")
def _(root: Path, base: Path) -> Path:
    folder = index_dir(root, {"a": "model.safetensors", "b": "model.safetensors", "c": "model.safetensors"})
    save_file(TENSORS, str(folder / "model.safetensors"))
    return folder


@case("index: shard is a folder", "does not exist")
def _(root: Path, base: Path) -> Path:
    folder = index_dir(root, {"a": "model.safetensors"})
    (folder / "model.safetensors").mkdir()
    return folder


@case("folder: model.safetensors linked from outside", OUTSIDE)
def _(root: Path, base: Path) -> Path:
    (root / "target").mkdir()
    (root / "target" / "model.safetensors").symlink_to(base)
    return root / "target"


# --- .bin files ------------------------------------------------------------------------------------
CANNOT = "cannot read as a PyTorch checkpoint"


class Runs:
    """An object whose unpickling would run a shell command (it must not)."""

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {MARKER}",))


class Custom:
    """A plain class instance: weights_only refuses its GLOBAL."""


for _name, _write, _expected in [
    ("garbage bytes", lambda p: p.write_bytes(bytes(range(256)) * 3), CANNOT),
    ("empty file", lambda p: p.write_bytes(b""), "the file is empty"),
    ("raw pickle (protocol 4)", lambda p: p.write_bytes(pickle.dumps({"w": [1, 2]}, protocol=4)), CANNOT),
    ("raw pickle (protocol 2)", lambda p: p.write_bytes(pickle.dumps({"w": [1, 2]}, protocol=2)), "Invalid magic"),
    ("raw pickle running code", lambda p: p.write_bytes(pickle.dumps({"w": Runs()}, protocol=2)),
     "holds a non-tensor object (posix.system)"),
    ("zip pickle running code", lambda p: torch.save({"w": Runs()}, p), "holds a non-tensor object (posix.system)"),
    ("zip pickle of a class instance", lambda p: torch.save({"w": Custom()}, p), "holds a non-tensor object"),
    ("truncated zip", lambda p: (torch.save(TENSORS, p), p.write_bytes(p.read_bytes()[:-300])), CANNOT),
    ("truncated legacy pickle", lambda p: (torch.save(TENSORS, p, _use_new_zipfile_serialization=False),
                                           p.write_bytes(p.read_bytes()[:-100])), CANNOT),
    ("a safetensors file renamed", lambda p: save_file(TENSORS, str(p)), CANNOT),
    ("a list of tensors", lambda p: torch.save(list(TENSORS.values()), p), "of type list"),
    ("a single tensor", lambda p: torch.save(TENSORS["a"], p), "of type Tensor"),
    ("an int", lambda p: torch.save(7, p), "of type int"),
    ("an empty dict", lambda p: torch.save({}, p), "no tensors found (top-level keys: none)"),
    ("wrapper of non-tensors", lambda p: torch.save({"model": {"w": 1.0}}, p), "no tensors found (top-level keys: model)"),
    ("training state without weights", lambda p: torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, p),
     "no tensors found"),
    ("unknown nesting", lambda p: torch.save({"x": {"y": dict(TENSORS)}}, p), "no tensors found (top-level keys: x)"),
    ("wrappers deeper than 4", lambda p: torch.save({"model": {"model": {"model": {"model": {"model": TENSORS}}}}}, p),
     "no tensors found"),
    ("integer keys", lambda p: torch.save({1: TENSORS["a"], 2: TENSORS["b"]}, p), "no tensors found"),
]:
    def _bin(root: Path, base: Path, write: Callable[[Path], object] = _write) -> Path:
        write(root / "t.bin")
        return root / "t.bin"
    case(f".bin: {_name}", _expected)(_bin)

# --- verdicts: wrappers compare, values that cannot be read are not proven -------------------------
for _name, _obj in [
    ("state_dict", {"state_dict": TENSORS, "epoch": 1}),
    ("model", {"model": TENSORS}),
    ("module", {"module": TENSORS}),
    ("model_state_dict", {"model_state_dict": TENSORS, "optimizer_state_dict": {}}),
    ("ema", {"ema": TENSORS}),
    ("model then module", {"model": {"module": TENSORS}}),
]:
    case(f"verdict: wrapped in {_name}", "verdict:identical")(
        lambda root, base, obj=_obj: (torch.save(obj, root / "t.bin"), root / "t.bin")[1])

for _name, _obj, _verdict in [
    ("transposed tensor", {"a": TENSORS["a"].t().contiguous().t(), "b": TENSORS["b"]}, "identical"),
    ("sparse tensor", {"a": TENSORS["a"].to_sparse(), "b": TENSORS["b"]}, "not_proven"),
    ("meta tensor", {"a": torch.empty(2, 3, device="meta"), "b": TENSORS["b"]}, "not_proven"),
    ("-0.0 for +0.0", {"a": torch.tensor([[-0.0, 1, 2], [3, 4, 5]]), "b": TENSORS["b"]}, "different"),
]:
    case(f"verdict: {_name}", f"verdict:{_verdict}")(
        lambda root, base, obj=_obj: (torch.save(obj, root / "t.bin"), root / "t.bin")[1])


@case("verdict: legacy (non-zip) pickle", "verdict:identical")
def _(root: Path, base: Path) -> Path:
    torch.save(TENSORS, root / "t.bin", _use_new_zipfile_serialization=False)
    return root / "t.bin"


@case("verdict: hub-cache layout (links into blobs)", "verdict:identical")
def _(root: Path, base: Path) -> Path:
    repo = root / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    save_file(TENSORS, str(repo / "blobs" / "0123abcd"))
    snap = repo / "snapshots" / "rev1"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to("../../blobs/0123abcd")
    return snap
