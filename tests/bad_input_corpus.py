"""A generated corpus of bad inputs to the CLI and the public API, each with the text its one line must hold.

``CLI``: name -> :class:`Cli` (an argv built in a workspace folder ``w`` that :func:`workspace` filled); the
promise is exit 2, exactly one ``runprof: error: ...`` line on stderr, nothing on stdout, no traceback, no
input changed. ``API``: name -> :class:`Api` (a call); the promise is a ``RunprofError`` whose ``str()`` is one
line. Cases that still break the promise because of code outside this corpus's owners carry ``xfail`` with
the reason (strict: they must fail until the fix lands). Generated families: every size field of a config with
every kind of bad value, prompts, every numeric flag of run/bench/count/compare with negative/zero/huge/
non-numeric values, model references, output paths, broken result JSON (whole shapes and field by field), API
calls with wrong types. Inputs fail before any model weight is read, except bench's own checks, which come after
the shipped tiny model is loaded.
"""
from __future__ import annotations

import copy
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "runprof"
HUGE = 10**12

# Tiny Mixtral config: 32 hidden, 4 heads of 8, 2 kv heads, 4 experts of width 48, top-2
BASE = {"model_type": "mixtral", "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "num_local_experts": 4,
        "num_experts_per_tok": 2, "max_position_embeddings": 64}

ARGPARSE = None  # argparse errors are one line now (cli/__init__.py _Parser)
BENCH_AFTER_LOAD = None  # bench checks its plan before loading
RENDER_KEYS = None  # from_dict reads every key the renderers read


@dataclass(frozen=True)
class Cli:
    argv: Callable[[Path], list[str]]
    expect: str
    xfail: str | None = None


@dataclass(frozen=True)
class Api:
    call: Callable[[Path], Any]
    expect: str
    xfail: str | None = None


def workspace(w: Path) -> None:
    """The files every case may name: a prompt, a good config in its folder, a checkpoint, an empty folder."""
    (w / "p.txt").write_text("hello world\n")
    (w / "cfg").mkdir()
    (w / "cfg" / "config.json").write_text(json.dumps(BASE))
    (w / "empty").mkdir()
    from safetensors.torch import save_file

    save_file({"a": torch.ones(2)}, str(w / "a.safetensors"))


def _write(w: Path, name: str, data: str | bytes) -> str:
    path = w / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return str(path)


def _config(w: Path, **fields: Any) -> str:
    return _write(w, "c.json", json.dumps({**BASE, **fields}))


# --- configs: every size field with every kind of bad value (count, before any weight) -----------------
INT_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "vocab_size", "num_local_experts", "num_experts_per_tok",
              "max_position_embeddings", "head_dim")
AT_LEAST_1 = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
              "num_experts_per_tok", "max_position_embeddings", "head_dim")
BAD_VALUES: dict[str, Any] = {"-1": -1, "abc": "abc", "null": None, "1.5": 1.5, "true": True, "list": [2]}


def _config_cases() -> dict[str, Cli]:
    cases = {}
    for field in INT_FIELDS:
        values = dict(BAD_VALUES)
        if field == "head_dim":
            del values["null"]  # head_dim null means "hidden_size / heads": a valid config
        if field in AT_LEAST_1:
            values["0"] = 0
        for label, value in values.items():
            cases[f"config {field} {label}"] = Cli(lambda w, f=field, v=value: ["count", _config(w, **{f: v})], field)
    cases["config hidden_size -128"] = Cli(lambda w: ["count", _config(w, hidden_size=-128)], "hidden_size -128")
    cases["config hidden_size 128.5"] = Cli(lambda w: ["count", _config(w, hidden_size=128.5)], "hidden_size 128.5")
    # one [10^12, 10^12] float32 q_proj: 10^24 x 4 bytes = 4.00e+24 bytes
    cases["config hidden_size 10^12"] = Cli(lambda w: ["count", _config(w, hidden_size=HUGE)], "4.00e+24 bytes")
    cases["config num_hidden_layers 10^12"] = Cli(lambda w: ["count", _config(w, num_hidden_layers=HUGE)],
                                                  "more than 2,048 decoder layers")
    cases["config kv heads 3 of 4"] = Cli(lambda w: ["count", _config(w, num_key_value_heads=3)], "does not divide")
    cases["config kv heads 10^12"] = Cli(lambda w: ["count", _config(w, num_key_value_heads=HUGE)], "does not divide")
    cases["config hidden 3 < 4 heads"] = Cli(lambda w: ["count", _config(w, hidden_size=3)], "0 dimensions")
    cases["config top-k 5 of 4"] = Cli(lambda w: ["count", _config(w, num_experts_per_tok=5)], "more than")
    cases["config top-k 10^12"] = Cli(lambda w: ["count", _config(w, num_experts_per_tok=HUGE)], "more than")
    for field, value in (("rms_norm_eps", "abc"), ("rms_norm_eps", None), ("tie_word_embeddings", "yes"),
                         ("tie_word_embeddings", 2), ("rope_parameters", -1), ("rope_parameters", "x")):
        cases[f"config {field} {value!r}"] = Cli(lambda w, f=field, v=value: ["count", _config(w, **{f: v})], field)
    cases["config for --random-init run"] = Cli(
        lambda w: [_config(w, vocab_size=0), "--random-init", "--prompt", str(w / "p.txt")], "vocab_size 0")
    return cases


# --- config files and model references ------------------------------------------------------------------
def _reference_cases() -> dict[str, Cli]:
    files: dict[str, tuple[str | bytes, str]] = {
        "not json": ("{not json", "not valid JSON"),
        "empty file": ("", "not valid JSON"),
        "json list": ("[1, 2]", "holds a JSON object"),
        "json string": ('"mixtral"', "holds a JSON object"),
        "no model_type": ('{"hidden_size": 4}', "no 'model_type'"),
        "model_type 5": ('{"model_type": 5}', "no 'model_type'"),
        "model_type zzz": ('{"model_type": "zzz"}', "'zzz' is not known"),
        "model_type t5": ('{"model_type": "t5"}', "has no causal-LM class"),
        "binary": (b"\x89PNG\r\n\x1a\n\x00\xff", "not UTF-8"),
        "latin-1": ('{"model_type": "caf\xe9"}'.encode("latin-1"), "not UTF-8"),
        "deeply nested": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    }
    cases = {f"count {name}": Cli(lambda w, d=data: ["count", _write(w, "x.json", d)], expect)
             for name, (data, expect) in files.items()}
    refs = {
        "empty": ("", "empty model reference"), "blank": ("   ", "empty model reference"),
        "unknown alias": ("frobnicate", "not a known alias"), "missing path": ("/no/such/config.json", "no such file"),
        "missing relative": ("./nope", "no such file"), "too many slashes": ("a/b/c", "no such file"),
        "uncached hub id": ("org/name", "not in the local Hugging Face cache"),
        "NUL": ("a\x00b", "NUL"), "too long": ("/" + "a" * 5000, "cannot look at this path"),
    }
    for name, (ref, expect) in refs.items():
        cases[f"count ref {name}"] = Cli(lambda w, r=ref: ["count", r], expect)
    cases["count dir without config"] = Cli(lambda w: ["count", str(w / "empty")], "has no config.json")
    for name in ("empty", "unknown alias", "missing path", "uncached hub id"):
        ref, expect = refs[name]
        cases[f"run ref {name}"] = Cli(lambda w, r=ref: [r, "--prompt", str(w / "p.txt")], expect)
    cases["run dir without config"] = Cli(lambda w: [str(w / "empty"), "--prompt", str(w / "p.txt")], "no config.json")
    cases["run config without weights"] = Cli(lambda w: [str(w / "cfg" / "config.json"), "--prompt", str(w / "p.txt")],
                                              "a config file has no weights")
    cases["run t5 random-init"] = Cli(lambda w: [_write(w, "t5.json", '{"model_type": "t5"}'), "--random-init",
                                                 "--prompt", str(w / "p.txt")], "has no causal-LM class")
    cases["run unknown subcommand"] = Cli(lambda w: ["frobnicate", "--prompt", str(w / "p.txt")], "not a known alias")
    cases["unknown subcommand, no prompt"] = Cli(lambda w: ["frobnicate"], "frobnicate", ARGPARSE)
    cases["misspelt subcommand"] = Cli(lambda w: ["comapre", "a", "b"], "comapre", ARGPARSE)
    cases["compare empty ref"] = Cli(lambda w: ["compare", "", str(w / "a.safetensors")], "empty checkpoint reference")
    cases["compare missing"] = Cli(lambda w: ["compare", "/no/a", str(w / "a.safetensors")], "no such file")
    cases["compare empty dir"] = Cli(lambda w: ["compare", str(w / "empty"), str(w / "a.safetensors")],
                                     "not a checkpoint")
    cases["compare text file"] = Cli(lambda w: ["compare", str(w / "a.safetensors"), str(w / "p.txt")],
                                     "not a checkpoint")
    cases["compare uncached hub ids"] = Cli(lambda w: ["compare", "org/name", "org/other"], "Hugging Face cache")
    return cases


# --- prompts (read before any model is loaded) ---------------------------------------------------------------
PROMPTS: dict[str, tuple[Callable[[Path], str], str]] = {
    "empty": (lambda w: _write(w, "e.txt", ""), "the file is empty"),
    "blank": (lambda w: _write(w, "e.txt", "  \n\t\n"), "the file is empty"),
    "binary": (lambda w: _write(w, "b.txt", b"\x89PNG\r\n\x1a\n\x00\x00\xff"), "not UTF-8 text (byte 0 is 0x89)"),
    "latin-1": (lambda w: _write(w, "l.txt", "caf\xe9 cr\xe8me\n".encode("latin-1")), "not UTF-8 text (byte 3"),
    "NUL bytes": (lambda w: _write(w, "n.txt", "hello\x00world\n"), "NUL bytes"),
    "directory": (lambda w: str(w / "empty"), "is a directory"),
    "missing": (lambda w: str(w / "nope.txt"), "no such file"),
    "/dev/null": (lambda w: "/dev/null", "the file is empty"),
    # the shipped model's context is 512 tokens: 600 KB of words is far past it (refused from a prefix)
    "huge": (lambda w: _write(w, "h.txt", "word " * 120_000), "past the model's context of 512 tokens"),
}


def _prompt_cases() -> dict[str, Cli]:
    cases = {}
    for name, (make, expect) in PROMPTS.items():
        cases[f"run prompt {name}"] = Cli(lambda w, m=make: ["--prompt", m(w)], expect)
        if name != "huge":  # bench reads the prompt before loading; the context check comes after the load
            cases[f"bench prompt {name}"] = Cli(lambda w, m=make: ["bench", "--prompt", m(w), "--top-k", "1"], expect)
    cases["run --lines blank lines"] = Cli(lambda w: ["--prompt", _write(w, "e.txt", "\n \n\n"), "--lines"], "empty")
    cases["run --lines fewer rows"] = Cli(
        lambda w: ["--prompt", _write(w, "two.txt", "a\nb\n"), "--lines", "--batch-size", "1"], "less than the 2")
    return cases


# --- numeric flags: negative, zero, huge, non-numeric ------------------------------------------------------
def _flag_cases() -> dict[str, Cli]:
    cases: dict[str, Cli] = {}

    def run(*flags: str) -> Callable[[Path], list[str]]:
        return lambda w: ["--prompt", str(w / "p.txt"), *flags]

    def bench(*flags: str) -> Callable[[Path], list[str]]:
        return lambda w: ["bench", "--prompt", str(w / "p.txt"), "--top-k", "1", *flags]

    def compare(*flags: str) -> Callable[[Path], list[str]]:
        return lambda w: ["compare", str(w / "a.safetensors"), str(w / "a.safetensors"), *flags]

    for flag in ("--max-new-tokens", "--batch-size", "--top-k", "--config-top-k", "--num-layers", "--threads"):
        for value in ("0", "-1"):
            cases[f"run {flag} {value}"] = Cli(run(flag, value), f"{flag} {value}")
        for value in ("abc", "1.5", ""):
            cases[f"run {flag} {value!r}"] = Cli(run(flag, value), flag, ARGPARSE)
    cases["run --max-new-tokens 10^12"] = Cli(run("--max-new-tokens", str(HUGE)), "past the model's context")
    cases["run --batch-size 10^12"] = Cli(run("--batch-size", str(HUGE)), "for the token ids alone")
    cases["run --top-k 10^12"] = Cli(run("--top-k", str(HUGE)), "out of range")
    cases["run --top-k 9 of 8"] = Cli(run("--top-k", "9"), "this model has 8 experts")
    cases["run --threads 10^12"] = Cli(run("--threads", str(HUGE)), "use at most")
    cases["run --num-layers without --random-init"] = Cli(run("--num-layers", "1"), "needs --random-init")
    cases["run --num-layers 10^12"] = Cli(lambda w: ["mixtral", "--random-init", "--num-layers", str(HUGE),
                                                     "--prompt", str(w / "p.txt")], "this model has 32 layers")
    cases["run --device nonsense"] = Cli(run("--device", "nonsense"), "--device nonsense")
    cases["run --device meta"] = Cli(run("--device", "meta"), "cannot run on meta")
    cases["run --dtype nonsense"] = Cli(run("--dtype", "fp8"), "--dtype", ARGPARSE)

    def bench_top_k(value: str) -> Callable[[Path], list[str]]:
        return lambda w: ["bench", "--prompt", str(w / "p.txt"), "--top-k", value]

    for value in ("abc", "1,,2", "", "1.5", "1;2"):  # comma lists, parsed by bench itself before the load
        cases[f"bench --top-k {value!r}"] = Cli(bench_top_k(value), "expected comma-separated")
        cases[f"bench --batch-size {value!r}"] = Cli(bench("--batch-size", value), "expected comma-separated")
    cases["bench --top-k 0"] = Cli(bench_top_k("0"), "--top-k 0", BENCH_AFTER_LOAD)
    cases["bench --top-k 10^12"] = Cli(bench_top_k(str(HUGE)), "1..8", BENCH_AFTER_LOAD)
    for flag, value, expect in (("--batch-size", "0", "--batch-size 0"), ("--repeats", "0", "--repeats 0"),
                                ("--repeats", "-1", "--repeats -1"), ("--warmup", "-1", "--warmup -1"),
                                ("--max-new-tokens", "1", "at least 2"), ("--max-new-tokens", "-1", "at least 2")):
        cases[f"bench {flag} {value}"] = Cli(bench(flag, value), expect, BENCH_AFTER_LOAD)
    for flag in ("--repeats", "--warmup", "--max-new-tokens", "--threads"):
        cases[f"bench {flag} 'abc'"] = Cli(bench(flag, "abc"), flag, ARGPARSE)
    for value in ("0", "-1", str(HUGE)):
        cases[f"bench --threads {value}"] = Cli(bench("--threads", value), "--threads")

    for flag in ("--rtol", "--atol"):
        for value in ("-1", "nan", "inf", "1e400", "-0.5"):
            cases[f"compare {flag} {value}"] = Cli(compare(flag, value), "must be a finite number >= 0")
        cases[f"compare {flag} 'abc'"] = Cli(compare(flag, "abc"), flag, ARGPARSE)
    cases["compare --ignore ("] = Cli(compare("--ignore", "("), "not a regular expression")
    cases["compare --ignore [z-a]"] = Cli(compare("--ignore", "[z-a]"), "not a regular expression")
    cases["compare --device tpu"] = Cli(compare("--device", "tpu"), "--device", ARGPARSE)
    cases["count --dtype fp8"] = Cli(lambda w: ["count", "mixtral", "--dtype", "fp8"], "--dtype", ARGPARSE)
    cases["count without a model"] = Cli(lambda w: ["count"], "model", ARGPARSE)
    cases["render without a path"] = Cli(lambda w: ["render"], "path", ARGPARSE)
    return cases


# --- output paths (--json) -------------------------------------------------------------------------------------
def _output_cases() -> dict[str, Cli]:
    def count(out: Callable[[Path], str]) -> Callable[[Path], list[str]]:
        return lambda w: ["count", str(w / "cfg" / "config.json"), "--json", out(w)]

    def hard_link(w: Path) -> str:
        (w / "link.json").hardlink_to(w / "cfg" / "config.json")
        return str(w / "link.json")

    def symlink(w: Path) -> str:
        (w / "sym.json").symlink_to(w / "cfg" / "config.json")
        return str(w / "sym.json")

    outputs: dict[str, tuple[Callable[[Path], str], str]] = {
        "empty": (lambda w: "", "--json ''"),
        "blank": (lambda w: "  ", "--json ''"),
        "a directory": (lambda w: str(w / "empty"), "is a directory"),
        "under a file": (lambda w: str(w / "p.txt" / "x.json"), "is a file, not a folder"),
        "NUL": (lambda w: "a\x00b.json", "NUL"),
        "name too long": (lambda w: str(w / ("x" * 300)), "longer than the system allows"),
        "the input": (lambda w: str(w / "cfg" / "config.json"), "would overwrite the input"),
        "a hard link to the input": (hard_link, "would overwrite the input"),
        "a symlink to the input": (symlink, "would overwrite the input"),
        "dotted path to the input": (lambda w: str(w / "cfg" / ".." / "cfg" / "config.json"), "would overwrite"),
        "the shipped model": (lambda w: str(PACKAGE / "models" / "tiny_moe" / "model.safetensors"), "runprof's own"),
        "the bundled configs": (lambda w: str(PACKAGE / "models" / "configs" / "new.json"), "runprof's own"),
    }
    cases = {f"count --json {name}": Cli(count(out), expect) for name, (out, expect) in outputs.items()}
    cases["count DIR --json inside DIR"] = Cli(lambda w: ["count", str(w / "cfg"), "--json", str(w / "cfg" / "o.json")],
                                               "would overwrite the input")
    cases["run --json the prompt"] = Cli(lambda w: ["--prompt", str(w / "p.txt"), "--json", str(w / "p.txt")],
                                         "would overwrite the input")
    cases["run --json the shipped weights"] = Cli(
        lambda w: ["--prompt", str(w / "p.txt"), "--json", str(PACKAGE / "models" / "tiny_moe" / "model.safetensors")],
        "runprof's own folder")
    cases["bench --json the prompt"] = Cli(
        lambda w: ["bench", "--prompt", str(w / "p.txt"), "--top-k", "1", "--json", str(w / "p.txt")], "would overwrite")
    cases["compare --json the base"] = Cli(
        lambda w: ["compare", str(w / "a.safetensors"), str(w / "a.safetensors"), "--json", str(w / "a.safetensors")],
        "would overwrite the input")
    return cases


# --- JSON for render: broken shapes, then a good count/run result broken field by field --------------------
@functools.cache
def good_count() -> dict[str, Any]:
    import runprof

    return runprof.count_params("mixtral").to_dict()


def _broken(field: str, value: Any, base: Callable[[], dict[str, Any]] = good_count) -> Callable[[Path], list[str]]:
    def argv(w: Path) -> list[str]:
        d = copy.deepcopy(base())
        *parents, last = field.split(".")
        target = d
        for key in parents:
            target = target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
        return ["render", _write(w, "r.json", json.dumps(d))]
    return argv


def _render_cases() -> dict[str, Cli]:
    shapes = {
        "list": ("[1, 2]", "not a JSON list"), "string": ('"run"', "not a JSON str"), "number": ("3", "not a JSON int"),
        "null": ("null", "not a JSON NoneType"), "true": ("true", "not a JSON bool"),
        "empty object": ("{}", "schema None"), "other schema": ('{"schema": "runprof/0"}', "schema 'runprof/0'"),
        "unknown kind": ('{"schema": "runprof/1", "kind": "zzz"}', "unknown result kind 'zzz'"),
        "kind list": ('{"schema": "runprof/1", "kind": []}', "unknown result kind []"),
        "no kind, no keys": ('{"schema": "runprof/1"}', "unknown result kind None"),
        "count without keys": ('{"schema": "runprof/1", "kind": "count"}', "not a complete count result"),
        "run without keys": ('{"schema": "runprof/1", "kind": "run"}', "not a complete run result"),
        "bench without keys": ('{"schema": "runprof/1", "kind": "bench"}', "not a complete bench result"),
        "compare without keys": ('{"schema": "runprof/1", "kind": "compare"}', "not a complete compare result"),
        "snapshot without keys": ('{"schema": "runprof/1", "kind": "snapshot"}', "not a complete snapshot result"),
        "truncated": ('{"schema": "runprof/1", "kind": "cou', "not valid JSON"),
        "empty file": ("", "not valid JSON"),
        "NaN params": ('{"schema": "runprof/1", "kind": "count", "params": NaN}', "not a complete count result"),
        "deeply nested": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        "binary": (b"\xff\xfe\x00{", "not UTF-8"),
    }
    cases = {f"render {name}": Cli(lambda w, d=data: ["render", _write(w, "r.json", d)], expect)
             for name, (data, expect) in shapes.items()}
    cases["render a directory"] = Cli(lambda w: ["render", str(w / "empty")], "is a directory")
    cases["render a missing file"] = Cli(lambda w: ["render", str(w / "nope.json")], "no such file")
    fields = [
        ("model.name", 5), ("model.class", None), ("model.dtype", []), ("params.total", "x"), ("params.total", 1.5),
        ("params.total", True), ("params.by_group", 5), ("params.by_group.embeddings", "x"), ("params.tied", 5),
        ("params.lm_head_tied", "yes"), ("params.buffers", "x"), ("params.by_layer_pattern", 5),
        ("moe.moe_layers", "x"), ("moe.num_experts", []), ("moe.top_k", {}), ("moe.params_per_expert", "x"),
        ("moe.shared_experts_params", []), ("moe.dense_layers", "x"), ("moe.layers", 5), ("bytes.total", "x"),
        ("bytes.by_dtype", [1]), ("bytes.buffers", "x"), ("params", KeyError), ("bytes", KeyError),
        ("params.total", KeyError),
    ]
    for field, value in fields:
        cases[f"render count {field} {'deleted' if value is KeyError else repr(value)}"] = Cli(
            _broken(field, value), "count result")
    cases["render count active_per_token {}"] = Cli(_broken("params.active_per_token", {}), "count result", RENDER_KEYS)
    return cases


# --- the public API -------------------------------------------------------------------------------------------
@functools.cache
def shipped() -> nn.Module:
    import runprof

    return runprof.load_model(None, device="cpu").model


def _api_cases() -> dict[str, Api]:
    import runprof

    linear = nn.Linear(2, 2)
    one = {"a": torch.ones(1)}
    calls: dict[str, tuple[Callable[[Path], Any], str]] = {
        "count_params zzz": (lambda w: runprof.count_params({"model_type": "zzz"}), "'zzz' is not known"),
        "count_params hidden -4": (lambda w: runprof.count_params({**BASE, "hidden_size": -4}), "hidden_size -4"),
        "count_params hidden 'abc'": (lambda w: runprof.count_params({**BASE, "hidden_size": "abc"}), "hidden_size"),
        "count_params {}": (lambda w: runprof.count_params({}), "needs a 'model_type'"),
        "count_params model_type 5": (lambda w: runprof.count_params({"model_type": 5}), "needs a 'model_type'"),
        "count_params int key": (lambda w: runprof.count_params({**BASE, 5: 1}), "every key must be a string"),
        "count_params t5": (lambda w: runprof.count_params({"model_type": "t5"}), "no causal-LM class"),
        "count_params ''": (lambda w: runprof.count_params(""), "empty model reference"),
        "count_params 5": (lambda w: runprof.count_params(5), "not int"),
        "count_params 1.5": (lambda w: runprof.count_params(1.5), "not float"),
        "count_params []": (lambda w: runprof.count_params([]), "not list"),
        "count_params bytes": (lambda w: runprof.count_params(b"mixtral"), "not bytes"),
        "count_params missing path": (lambda w: runprof.count_params(Path("/no/such/config.json")), "no such file"),
        "count_params dtype 'bf16'": (lambda w: runprof.count_params("mixtral", dtype="bf16"), "dtype='bf16'"),
        "count_params name 5": (lambda w: runprof.count_params("mixtral", name=5), "name=5"),
        "memory_ledger dict": (lambda w: runprof.memory_ledger({"a": torch.ones(1)}), "not dict"),
        "memory_ledger None": (lambda w: runprof.memory_ledger(None), "not NoneType"),
        "track 5": (lambda w: runprof.track(5).__enter__(), "not int"),
        "track nvml 'a'": (lambda w: runprof.track(linear, nvml_interval_s="a").__enter__(), "nvml_interval_s='a'"),
        "track nvml -1": (lambda w: runprof.track(linear, nvml_interval_s=-1).__enter__(), "nvml_interval_s=-1"),
        "track nvml 0": (lambda w: runprof.track(linear, nvml_interval_s=0).__enter__(), "nvml_interval_s=0"),
        "track nvml nan": (lambda w: runprof.track(linear, nvml_interval_s=math.nan).__enter__(), "nan"),
        "snapshot 5": (lambda w: runprof.snapshot(5), "got a int"),
        "snapshot None": (lambda w: runprof.snapshot(None), "got a NoneType"),
        "compare 5, 6": (lambda w: runprof.compare(5, 6), "got a int"),
        "compare rtol 'x'": (lambda w: runprof.compare(one, one, rtol="x"), "rtol='x'"),
        "compare atol -1": (lambda w: runprof.compare(one, one, atol=-1), "atol=-1"),
        "compare missing paths": (lambda w: runprof.compare("/no/a", "/no/b"), "no such file"),
        "set_top_k 0": (lambda w: runprof.set_top_k(shipped(), 0), "out of range"),
        "set_top_k 99": (lambda w: runprof.set_top_k(shipped(), 99), "out of range"),
        "set_top_k '2'": (lambda w: runprof.set_top_k(shipped(), "2"), "must be an integer"),
        "set_top_k 1.5": (lambda w: runprof.set_top_k(shipped(), 1.5), "must be an integer"),
        "set_top_k dense": (lambda w: runprof.set_top_k(linear, 1), "has no MoE layers"),
        "load_result 5": (lambda w: runprof.load_result(5), "not int"),
        "load_result None": (lambda w: runprof.load_result(None), "not NoneType"),
        "load_result missing": (lambda w: runprof.load_result(w / "nope.json"), "no such file"),
        "load_result {}": (lambda w: runprof.load_result({}), "schema None"),
        "load_result mistyped": (lambda w: runprof.load_result({**good_count(), "params": {
            **good_count()["params"], "total": "x"}}), "params.total is 'x', expected int"),
        "render 5": (lambda w: runprof.render(5), "not int"),
        "render a dict": (lambda w: runprof.render({"schema": "runprof/1"}), "not dict"),
        "load_model ''": (lambda w: runprof.load_model(""), "empty model reference"),
        "load_model device 5": (lambda w: runprof.load_model(None, device=5), "device=5"),
        "load_model device meta": (lambda w: runprof.load_model(None, device="meta"), "cannot run on meta"),
        "load_model dtype 5": (lambda w: runprof.load_model(None, dtype=5), "dtype=5"),
        "load_model num_layers '2'": (lambda w: runprof.load_model("mixtral", random_init=True, num_layers="2"),
                                      "num_layers='2'"),
        "load_model num_layers 0": (lambda w: runprof.load_model("mixtral", random_init=True, num_layers=0),
                                    "num_layers=0"),
        "load_model seed 'x'": (lambda w: runprof.load_model(None, random_init=True, seed="x"), "seed='x'"),
    }
    cases = {name: Api(call, expect) for name, (call, expect) in calls.items()}
    cases["set_top_k 5"] = Api(lambda w: runprof.set_top_k(5, 1), "not int")
    cases["snapshot of strings"] = Api(lambda w: runprof.snapshot({"a": "x"}), "maps to a str")
    return cases


CLI: dict[str, Cli] = {**_config_cases(), **_reference_cases(), **_prompt_cases(), **_flag_cases(),
                       **_output_cases(), **_render_cases()}
API: dict[str, Api] = _api_cases()
