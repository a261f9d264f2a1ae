"""Static counts against the published reference figures, and the invariants of every count."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MixtralConfig

import runprof
from runprof.results import GROUPS, CountResult
from runprof.static.groups import fold_name

from .conftest import REPO, SHARED_REFERENCE, reference_config

# Source: ../shared/reference/README.md, "Exact counts" and "Group breakdowns" (transformers 5.23, meta
# device, unique parameters). Columns: total, active (all), active (exclude_input_embedding), then groups
# embeddings / attention / dense_mlp / routed_experts / shared_experts / routers / norms / lm_head.
REFERENCE = {
    "mixtral-8x7b-v0.1": (46_702_792_704, 12_879_925_248, 12_748_853_248,
                          (131_072_000, 1_342_177_280, 0, 45_097_156_608, 0, 1_048_576, 266_240, 131_072_000)),
    "mistral-7b-instruct-v0.2": (7_241_732_096, 7_241_732_096, 7_110_660_096,
                                 (131_072_000, 1_342_177_280, 5_637_144_576, 0, 0, 0, 266_240, 131_072_000)),
    "llama-2-7b-hf": (6_738_415_616, 6_738_415_616, 6_607_343_616,
                      (131_072_000, 2_147_483_648, 4_328_521_728, 0, 0, 0, 266_240, 131_072_000)),
    "qwen1.5-moe-a2.7b": (14_315_784_192, 2_689_173_504, 2_378_008_576,
                          (311_164_928, 402_800_640, 0, 12_457_082_880, 830_521_344, 2_949_120, 100_352, 311_164_928)),
    "olmoe-1b-7b-0924": (6_919_161_856, 1_282_017_280, 1_178_994_688,
                         (103_022_592, 268_435_456, 0, 6_442_450_944, 0, 2_097_152, 133_120, 103_022_592)),
    "deepseek-v2-lite": (15_706_484_224, 2_661_150_208, 2_451_435_008,
                         (209_715_200, 371_589_120, 67_239_936, 14_394_851_328, 449_839_104, 3_407_872, 126_464, 209_715_200)),
    "gpt-oss-20b": (20_914_757_184, 4_187_440_704, 3_608_307_264,
                    (579_133_440, 637_203_456, 0, 19_116_933_120, 0, 2_212_608, 141_120, 579_133_440)),
}
# MoE layout from the same table: MoE layers, E, top_k, params per routed expert, dense layers.
MOE_LAYOUT = {
    "mixtral-8x7b-v0.1": (32, 8, 2, 176_160_768, ()),
    "tanuki-8x8b": (32, 8, 2, 176_160_768, ()),
    "qwen1.5-moe-a2.7b": (24, 60, 4, 8_650_752, ()),
    "olmoe-1b-7b-0924": (16, 64, 8, 6_291_456, ()),
    "deepseek-v2-lite": (26, 64, 6, 8_650_752, (0,)),
    "gpt-oss-20b": (24, 32, 4, 24_891_840, ()),
}


def _cli_count(config_path, tmp_path) -> dict:
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "runprof", "count", str(config_path), "--json", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_counts_exact(name):
    total, active_all, active_no_input, groups = REFERENCE[name]
    r = runprof.count_params(str(reference_config(name)))
    assert r.params.total == total
    assert r.params.active_per_token["all"] == active_all
    assert r.params.active_per_token["exclude_input_embedding"] == active_no_input
    # exclude_embeddings drops lm_head too: all − embeddings − lm_head
    assert r.params.active_per_token["exclude_embeddings"] == active_all - groups[0] - groups[7]
    assert tuple(r.params.by_group[g] for g in GROUPS[:-1]) == groups
    assert r.params.by_group["other"] == 0
    if name in MOE_LAYOUT:
        layers, experts, k, per_expert, dense = MOE_LAYOUT[name]
        m = r.moe
        assert (m.moe_layers, m.num_experts, m.top_k, m.params_per_expert, m.dense_layers) == (
            layers, experts, k, per_expert, dense)
        assert m.top_k_config == k
    else:
        assert r.moe is None


def test_cli_count_json_matches_reference(tmp_path):
    """The acceptance path: ``python -m runprof count <config.json> --json out`` for one config."""
    d = _cli_count(reference_config("qwen1.5-moe-a2.7b"), tmp_path)
    total, active_all, active_no_input, groups = REFERENCE["qwen1.5-moe-a2.7b"]
    assert d["schema"] == "runprof/1"
    assert d["params"]["total"] == total
    assert d["params"]["active_per_token"]["all"] == active_all
    assert d["params"]["active_per_token"]["exclude_input_embedding"] == active_no_input
    assert [d["params"]["by_group"][g] for g in GROUPS[:-1]] == list(groups)
    assert set(d) >= {"model", "params", "moe", "bytes"}
    assert d["moe"]["params_per_expert"] == 8_650_752


def test_tanuki_blog_anchor():
    # Tanuki-8x8B blog: 46,973,325,312 total, 13,150,457,856 active (reference README, "Anchors").
    r = runprof.count_params(str(reference_config("tanuki-8x8b")))
    assert r.params.total == 46_973_325_312
    assert r.params.active_per_token["all"] == 13_150_457_856
    # exclude_input_embedding drops the 65,024 x 4,096 = 266,338,304 input embedding
    assert r.params.active_per_token["exclude_input_embedding"] == 13_150_457_856 - 266_338_304


def test_mistral_anchor_and_bf16_bytes():
    r = runprof.count_params(str(reference_config("mistral-7b-instruct-v0.2")), dtype=torch.bfloat16)
    assert r.params.total == 7_241_732_096
    assert r.bytes.by_dtype == {"bfloat16": 2 * 7_241_732_096}
    assert r.bytes.total / r.params.total == 2.0


def test_reference_readme_agrees_with_test_constants():
    """The constants above are the reference README's; re-read its table when the file is at hand."""
    readme = SHARED_REFERENCE / "README.md"
    if not readme.is_file():
        pytest.skip("../shared/reference/README.md not present")
    text = readme.read_text()
    for name, (total, active_all, _, _) in REFERENCE.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[2].replace(",", "")) == total
        if "dense" not in cells[3]:
            assert int(cells[3].replace(",", "")) == active_all


def _tiny_mixtral(**kw) -> MixtralConfig:
    base = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=100, num_local_experts=4, num_experts_per_tok=2)
    base.update(kw)
    return MixtralConfig(**base)


def test_hand_counted_tiny_mixtral_and_invariants():
    r = runprof.count_params(_tiny_mixtral())
    # per layer: attention q,o 32x32 + k,v 16x32 (2 kv heads x head_dim 8) = 2*1024 + 2*512 = 3,072;
    # router 4x32 = 128; experts 4 x (2*48*32 + 32*48) = 4 x 4,608 = 18,432; norms 2 x 32 = 64
    # embeddings 100x32 = 3,200 and lm_head 3,200 (untied); final norm 32
    assert r.params.by_group == {
        "embeddings": 3_200, "attention": 3 * 3_072, "dense_mlp": 0, "routed_experts": 3 * 18_432,
        "shared_experts": 0, "routers": 3 * 128, "norms": 3 * 64 + 32, "lm_head": 3_200, "other": 0}
    assert r.params.total == sum(r.params.by_group.values()) == 71_520  # 3,200 + 9,216 + 55,296 + 384 + 224 + 3,200
    assert r.moe.params_per_expert == 4_608
    # active = total − 3 layers x (4 − 2) x 4,608
    assert r.params.active_per_token["all"] == 71_520 - 3 * 2 * 4_608
    folded = sum(row.params for row in r.params.by_layer_pattern)
    assert folded == r.params.total
    row = next(x for x in r.params.by_layer_pattern if x.name == "model.layers.n.mlp.experts.gate_up_proj")
    assert (row.shape, row.count, row.params) == ((4, 96, 32), 3, 3 * 4 * 96 * 32)
    assert CountResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_tied_embeddings_counted_once():
    untied = runprof.count_params(_tiny_mixtral())
    tied = runprof.count_params(_tiny_mixtral(tie_word_embeddings=True))
    assert tied.params.total == untied.params.total - 3_200
    assert tied.params.by_group["lm_head"] == 0 and tied.params.by_group["embeddings"] == 3_200
    assert tied.params.tied == (("model.embed_tokens.weight", "lm_head.weight"),)
    # tied: lm_head still uses the shared tensor, so exclude_input_embedding keeps it
    assert tied.params.active_per_token["exclude_input_embedding"] == tied.params.active_per_token["all"]
    assert tied.params.active_per_token["exclude_embeddings"] == tied.params.active_per_token["all"] - 3_200


def test_meta_and_real_model_agree():
    cfg = _tiny_mixtral()
    torch.manual_seed(0)
    real = AutoModelForCausalLM.from_config(cfg)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(cfg)
    a, b = runprof.count_params(real), runprof.count_params(meta)
    assert a.params == b.params and a.moe == b.moe and a.bytes == b.bytes
    assert (a.model.device, b.model.device) == ("cpu", "meta")
    assert a.bytes.by_dtype == {"float32": 4 * a.params.total}


def test_dense_model_active_equals_total():
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=100)
    r = runprof.count_params(cfg)
    assert r.moe is None
    assert r.params.active_per_token["all"] == r.params.total
    # dense MLP: 2 layers x 3 x 32 x 64 = 12,288
    assert r.params.by_group["dense_mlp"] == 12_288


def test_fold_name():
    assert fold_name("model.layers.17.mlp.experts.gate_up_proj") == "model.layers.n.mlp.experts.gate_up_proj"
    assert fold_name("model.layers.3.mlp.experts.5.w1.weight") == "model.layers.n.mlp.experts.n.w1.weight"
    assert fold_name("lm_head.weight") == "lm_head.weight"


def test_unseen_config_counts_fast_and_small():
    """Any causal-LM config counts in under 2 s after import, with no weights and under 500 MB."""
    code = (
        "import time, runprof\n"
        "from transformers import Qwen3MoeConfig\n"
        "runprof.count_params('mixtral')\n"  # warm: transformers' modeling machinery imported
        "cfg = Qwen3MoeConfig(num_hidden_layers=94, hidden_size=4096, num_experts=128,"
        " moe_intermediate_size=1536, num_attention_heads=64, num_key_value_heads=4, vocab_size=151936)\n"
        "times = []\n"
        "for _ in range(3):\n"  # the first includes importing the qwen3_moe modeling module
        "    t = time.perf_counter(); r = runprof.count_params(cfg); times.append(time.perf_counter() - t)\n"
        # VmHWM, not ru_maxrss: ru_maxrss survives exec and would report the parent pytest's peak
        "hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "print(times[0], hwm, r.params.total)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    seconds, rss_kib, total = proc.stdout.split()
    assert float(seconds) < 2.0
    assert int(rss_kib) < 500 * 1024
    assert int(total) > 200e9  # a Qwen3-235B-shaped model, never allocated


@pytest.mark.parametrize(
    "args, message",
    [
        (["count", "/no/such/config.json"], "no such file"),
        (["count", "BADJSON"], "not valid JSON"),
        (["count", "UNKNOWN"], "not known"),
        (["count", "someorg/some-model"], "unreachable"),
        (["count", "not-an-alias"], "not a known alias"),
    ],
)
def test_cli_bad_input_one_line_exit_2(args, message, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"model_type": "no_such_model_type"}')
    args = [str(bad) if a == "BADJSON" else str(unknown) if a == "UNKNOWN" else a for a in args]
    proc = subprocess.run([sys.executable, "-m", "runprof", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_bitsandbytes_4bit_logical_count():
    bnb = pytest.importorskip("bitsandbytes")
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=100)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    plain = runprof.count_params(model)
    try:
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear) and child_name != "lm_head":
                    q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                          quant_type="nf4")
                    q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4")
                    q = q.to("cpu") if not torch.cuda.is_available() else q.cuda()
                    setattr(parent, child_name, q)
    except Exception as e:  # bitsandbytes without a usable backend on this machine
        pytest.skip(f"bitsandbytes 4-bit cannot run here: {e}")
    quant = runprof.count_params(model)
    if not any(hasattr(p, "quant_state") and p.quant_state is not None for p in model.parameters()):
        pytest.skip("bitsandbytes did not quantize on this device")
    assert quant.params.total == plain.params.total
    # 4-bit packing: the quantized weights take 0.5 byte per value plus their state (absmax per block of
    # 64 values, a 16-entry code), so between 1/8 and 1/4 of their fp32 bytes
    quant_params = plain.params.total - plain.params.by_group["embeddings"] - plain.params.by_group["lm_head"] \
        - plain.params.by_group["norms"]
    assert quant_params * 0.5 < quant.bytes.by_dtype["nf4"] < quant_params * 1.0


def _zoo():
    from .moe_zoo import MOE_MODEL_TYPES

    return MOE_MODEL_TYPES


ROUTED_EXTRA = {
    "jetmoe": "the MoE/MoA output bias lives in the experts module beside the E experts",
    "longcat_flash": "gate_up_proj has rows for the zero-computation experts too (never read)",
}
ROUTER_SHARED = {"zaya": "a norm inside the router counts as a norm"}


@pytest.mark.parametrize("model_type", _zoo())
def test_every_moe_architecture_counts_consistently(model_type):
    from .moe_zoo import tiny_config

    r = runprof.count_params(tiny_config(model_type))  # built on the meta device
    p = r.params
    assert sum(p.by_group.values()) == p.total
    assert sum(row.params for row in p.by_layer_pattern) == p.total
    assert p.by_group["attention"] > 0 and p.by_group["norms"] > 0
    m = r.moe
    routed = sum(x.num_experts * x.params_per_expert for x in m.layers)
    # the routers' own parameters, counted from the modules discovery found (each tensor once)
    from runprof.moe import find_moe_layers
    from runprof.static import build_meta_model
    from runprof.tensors import logical_numel

    seen: dict[int, int] = {}
    for layer in find_moe_layers(build_meta_model(tiny_config(model_type))):
        for t in (layer.router.parameters() if layer.router is not None else ()):
            seen[id(t)] = logical_numel(t)
    if model_type in ROUTED_EXTRA:  # experts tensors hold more than E x params per expert
        assert p.by_group["routed_experts"] > routed
    else:
        assert p.by_group["routed_experts"] == routed
    if model_type in ROUTER_SHARED:
        assert p.by_group["routers"] < sum(seen.values())
    else:
        assert p.by_group["routers"] == sum(seen.values()) > 0


def test_experts_beside_attention_are_not_shared_experts():
    """Gemma-4 puts router and experts directly in the decoder layer next to a dense MLP."""
    from .moe_zoo import tiny_config

    g = runprof.count_params(tiny_config("gemma4_text")).params.by_group
    assert g["shared_experts"] == 0 and g["dense_mlp"] > 0 and g["attention"] > 0


def test_declared_quantization_sizes_the_stored_tensors():
    """gpt-oss-20b declares MXFP4 experts: 24 layers x (32 x 2880 x 5760 + 32 x 2880 x 2880) = 19,110,297,600
    expert weights at 4 bits + one 8-bit scale per 32 (17/32 byte each) = 10,152,345,600 B; the other
    20,914,757,184 - 19,110,297,600 = 1,804,459,584 parameters in bf16: 3,608,919,168 B (about 13 GB in all)."""
    import torch

    r = runprof.count_params("gpt-oss-20b", dtype=torch.bfloat16)
    assert r.params.total == 20_914_757_184  # the logical count does not change
    assert r.bytes.by_dtype == {"mxfp4": 10_152_345_600, "bfloat16": 3_608_919_168}
    assert r.bytes.quantization == {"method": "mxfp4", "applied": True, "quantized_params": 19_110_297_600,
                                    "reason": None}


def test_bitsandbytes_gptq_and_unknown_quantization_configs():
    from transformers import LlamaConfig

    base = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=4, vocab_size=100, tie_word_embeddings=False)
    dense = runprof.count_params(LlamaConfig(**base))
    linear = 4 * 64 * 64 + 3 * 64 * 128  # q, k, v, o and gate, up, down of the one layer (lm_head is skipped)
    others = dense.params.total - linear
    bnb = runprof.count_params(LlamaConfig(**base, quantization_config={
        "quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}))
    # per weight: numel / 2 + numel / 64 fp32 absmax + the 16-entry fp32 code
    weights = [64 * 64] * 4 + [64 * 128] * 3
    assert bnb.bytes.by_dtype["nf4"] == sum(n // 2 + n // 64 * 4 + 64 for n in weights)
    assert bnb.bytes.by_dtype["float32"] == others * 4
    gptq = runprof.count_params(LlamaConfig(**base, quantization_config={"quant_method": "gptq", "bits": 4,
                                                                         "group_size": 32}))
    # [out, in] weight: in x out / 2 packed + (in / 32) x out fp16 scales + (in / 32) x out / 2 zeros + in int32
    assert gptq.bytes.by_dtype["gptq-int4"] == sum(
        o * i // 2 + (i // 32) * o * 2 + (i // 32) * o // 2 + i * 4
        for o, i in [(64, 64)] * 4 + [(128, 64), (128, 64), (64, 128)])
    odd = runprof.count_params(LlamaConfig(**base, quantization_config={"quant_method": "hqq"}))
    assert odd.bytes.by_dtype == dense.bytes.by_dtype
    assert odd.bytes.quantization == {"method": "hqq", "applied": False, "quantized_params": 0, "reason": "not_sized"}
