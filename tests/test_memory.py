"""Memory ledger: static rows by hand, null GPU rows on CPU, ledger arithmetic with injected readings."""
from __future__ import annotations

import pytest
import torch

import runprof
from runprof.memory import GpuReadings, Nvml, Reading, build_ledger, memory_ledger
from runprof.results import Cause, MemoryLedger

from .moe_zoo import tiny_model


def _rows(memory: MemoryLedger):
    return {r.name: r for r in memory.rows}


def _hidden(pid: int = 7) -> Reading:
    return Reading.unknown(Cause.NVML_PROCESS_HIDDEN, pid=pid)


def _no_nvml() -> Reading:
    return Reading.unknown(Cause.NVML_UNAVAILABLE, error="x")


def test_cpu_track_has_memory_section_with_exact_weights():
    model = tiny_model("mixtral")
    with runprof.track(model) as t:
        model.generate(torch.randint(3, 100, (1, 8)), max_new_tokens=4, min_new_tokens=4, do_sample=False,
                       pad_token_id=0)
    rows = _rows(t.result.memory)
    unique = {id(p): p for p in model.parameters()}.values()
    assert rows["weights"].bytes == sum(p.numel() * p.element_size() for p in unique)
    assert rows["weights"].bytes == t.result.bytes.total
    for name, row in rows.items():
        if row.source in ("torch.cuda", "nvml"):
            assert row.bytes is None and row.reason is Cause.NOT_CUDA, name
    assert rows["process_rss"].bytes > rows["weights"].bytes
    # the cache holds 8 + 4 − 1 = 11 positions: 2 (k, v) x layers x kv heads x head dim x 11 x 4 bytes
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    expected = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 11 * 4
    assert rows["kv_cache"].bytes == expected
    assert rows["kv_cache_estimate"].bytes == expected


@pytest.mark.parametrize("dtype, size", [(torch.float32, 4), (torch.bfloat16, 2)])
def test_static_rows_by_hand(dtype, size):
    lin = torch.nn.Linear(8, 3).to(dtype)
    lin.register_buffer("scale", torch.ones(5, dtype=torch.float32))
    rows = _rows(memory_ledger(lin))
    assert rows["weights"].bytes == (8 * 3 + 3) * size  # weight 3x8 + bias 3
    assert rows["buffers"].bytes == 5 * 4
    assert rows["nvml_used"].bytes is None and rows["nvml_used"].reason is Cause.NOT_CUDA


def test_ledger_rows_add_up_with_injected_gpu_readings():
    lin = torch.nn.Linear(1024, 1024, bias=False)  # 4 MiB of fp32 weights
    w = 1024 * 1024 * 4
    gpu = GpuReadings(
        allocated_start=Reading(w + 1000),  # 1,000 bytes of other tensors at load
        allocated_end=Reading(w + 1000 + 5000),  # 5,000 more after the run
        reserved_end=Reading(w + 1000 + 5000 + 2_000_000),
        peak_allocated=Reading(w + 1000 + 90_000),
        nvml_used=Reading(w + 1000 + 5000 + 2_000_000 + 300_000_000),
        nvml_total=Reading(80 * 2**30),
    )
    mem = build_ledger(lin, gpu={"cpu": gpu})
    rows = _rows(mem)
    assert rows["other_at_load"].bytes == 1000
    assert rows["other_after_run"].bytes == 5000
    assert rows["allocator_slack"].bytes == 2_000_000
    assert rows["cuda_context_and_other"].bytes == 300_000_000
    assert rows["activations_peak"].bytes == 90_000
    assert mem.parts_total == rows["nvml_used"].bytes


def test_hidden_process_keeps_the_device_level_figures():
    """In a container whose PIDs NVML cannot see, the process row is null with why; the device rows stay."""
    gpu = GpuReadings(Reading(100), Reading(100), Reading(200), Reading(150), _hidden(),
                      nvml_total=Reading(80 * 2**30), nvml_device_used=Reading(3 * 2**30))
    rows = _rows(build_ledger(torch.nn.Linear(1, 1), gpu={"cpu": gpu}))
    assert rows["nvml_used"].bytes is None and rows["nvml_used"].reason is Cause.NVML_PROCESS_HIDDEN
    assert rows["nvml_used"].detail == {"pid": 7}
    assert rows["cuda_context_and_other"].bytes is None
    assert rows["cuda_context_and_other"].reason is Cause.NVML_PROCESS_HIDDEN
    assert rows["nvml_device_used"].bytes == 3 * 2**30 and rows["nvml_device_total"].bytes == 80 * 2**30


def test_missing_nvml_degrades_to_none_with_reason():
    gpu = GpuReadings(Reading(100), Reading(100), Reading(200), Reading(150), _no_nvml())
    mem = build_ledger(torch.nn.Linear(1, 1), gpu={"cpu": gpu})
    rows = _rows(mem)
    assert rows["cuda_context_and_other"].bytes is None
    assert rows["cuda_context_and_other"].reason is Cause.NVML_UNAVAILABLE
    assert mem.parts_total is None


@pytest.mark.cuda
def test_cuda_ledger_matches_allocator_and_nvml():
    """What can fail: weights vs the allocator after load, the KV row vs the cache's own tensors, a sane CUDA
    context, NVML's device figure at least torch's reserved memory. The per-process sum is checked only where
    NVML shows this process; where it is hidden (a container), the test says so instead of passing quietly."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    model = tiny_model("mixtral", hidden_size=512, intermediate_size=1024).to("cuda", torch.bfloat16)
    torch.cuda.synchronize()
    allocated = torch.cuda.memory_allocated() - before
    ids = torch.randint(3, 100, (1, 16), device="cuda")
    with torch.inference_mode(), runprof.track(model) as t:
        out = model(ids, use_cache=True)
    rows = _rows(t.result.memory)
    static = rows["weights"].bytes + rows["buffers"].bytes
    assert abs(static - allocated) <= 0.01 * allocated, (static, allocated)
    cache = out.past_key_values
    assert rows["kv_cache"].bytes == sum(
        x.numel() * x.element_size() for layer in cache.layers for x in (layer.keys, layer.values))
    if rows["nvml_device_used"].bytes is None:
        pytest.skip(f"NVML gives no device figure here ({rows['nvml_device_used'].reason})")
    assert rows["nvml_device_used"].bytes >= torch.cuda.memory_reserved()
    if rows["nvml_used"].bytes is None:
        pytest.skip(f"NVML hides this process ({rows['nvml_used'].reason}): the per-process rows cannot be checked")
    assert 0 <= rows["cuda_context_and_other"].bytes <= 2 * 2**30
    assert t.result.memory.parts_total == rows["nvml_used"].bytes


@pytest.mark.cuda
def test_cuda_ledger_per_device_under_a_device_map():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs")
    from accelerate import dispatch_model

    model = tiny_model("mixtral", hidden_size=512, intermediate_size=1024)
    model = dispatch_model(model, device_map={"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1,
                                              "model.norm": 1, "model.rotary_emb": 1, "lm_head": 1})
    allocated = {f"cuda:{i}": torch.cuda.memory_allocated(i) for i in range(2)}
    ids = torch.randint(3, 100, (1, 16), device="cuda:0")
    with runprof.track(model) as t:
        model(ids, use_cache=True)
    mem = t.result.memory
    assert set(mem.devices) == {"cuda:0", "cuda:1"}
    for dev, ledger in mem.devices.items():
        rows = _rows(ledger)
        resident = rows["weights"].bytes + rows["buffers"].bytes
        assert abs(resident - allocated[dev]) <= 0.01 * allocated[dev], dev
        if rows["nvml_used"].bytes is not None:
            assert ledger.parts_total == rows["nvml_used"].bytes
    rows = _rows(mem)
    assert rows["weights"].bytes == t.result.bytes.total and rows["weights_offloaded"].bytes == 0

def _gpu(resident: int, other: int, after: int, slack: int, context: int | None) -> GpuReadings:
    start = resident + other
    return GpuReadings(allocated_start=Reading(start), allocated_end=Reading(start + after),
                       reserved_end=Reading(start + after + slack), peak_allocated=Reading(start + 2 * after),
                       nvml_used=_no_nvml() if context is None else
                       Reading(start + after + slack + context), nvml_total=Reading(80 * 2**30))


def test_one_ledger_per_device_and_their_total():
    """Readings per device: each device's ledger counts the tensors on that device; rows are their sum.
    (No second GPU here: the CPU and the meta device stand in for two devices; the arithmetic is per key.)"""
    model = torch.nn.Sequential(torch.nn.Linear(64, 64, bias=False), torch.nn.Linear(64, 32, bias=False))
    model[1].to("meta")
    a, b = 64 * 64 * 4, 32 * 64 * 4
    mem = build_ledger(model, gpu={"cpu": _gpu(a, 100, 500, 7000, 300_000), "meta": _gpu(b, 50, 0, 3000, 200_000)})
    dev = {d: _rows(m) for d, m in mem.devices.items()}
    assert dev["cpu"]["weights"].bytes == a and dev["meta"]["weights"].bytes == b
    assert dev["cpu"]["other_at_load"].bytes == 100 and dev["meta"]["other_at_load"].bytes == 50
    for d, m in mem.devices.items():
        assert m.parts_total == dev[d]["nvml_used"].bytes, d
    rows = _rows(mem)
    assert rows["weights"].bytes == a + b and rows["weights_offloaded"].bytes == 0
    assert rows["other_at_load"].bytes == 150
    assert rows["cuda_context_and_other"].bytes == 500_000
    assert rows["nvml_device_total"].bytes == 2 * 80 * 2**30
    nvml = (a + 100 + 500 + 7000 + 300_000) + (b + 50 + 3000 + 200_000)
    assert mem.parts_total == rows["nvml_used"].bytes == nvml
    # one device without NVML: its figure and the total are null, the note names the device
    mem = build_ledger(model, gpu={"cpu": _gpu(a, 100, 500, 7000, 300_000), "meta": _gpu(b, 50, 0, 3000, None)})
    rows = _rows(mem)
    assert rows["nvml_used"].bytes is None and rows["nvml_used"].reason is Cause.DEVICE_UNKNOWN
    assert rows["nvml_used"].detail == {"device": "meta", "cause": "nvml_unavailable", "error": "x"}
    assert _rows(mem.devices["cpu"])["nvml_used"].bytes is not None


def test_weights_not_on_the_gpus_are_offloaded():
    """Readings for one device only: parameters elsewhere are ``weights_offloaded``, named in the note."""
    model = torch.nn.Sequential(torch.nn.Linear(64, 64, bias=False), torch.nn.Linear(64, 32, bias=False))
    model[1].to("meta")
    mem = build_ledger(model, gpu={"cpu": _gpu(64 * 64 * 4, 0, 0, 0, 0)})
    rows = _rows(mem)
    assert rows["weights"].bytes == 64 * 64 * 4
    assert rows["weights_offloaded"].bytes == 32 * 64 * 4
    assert rows["weights_offloaded"].reason is Cause.OFFLOADED and rows["weights_offloaded"].detail == {
        "places": {"meta": 8192}, "meta": True}
    assert mem.parts_total == rows["nvml_used"].bytes
    cpu = _rows(build_ledger(model, gpu=None))  # a CPU ledger: meta parameters are not resident either
    assert (cpu["weights"].bytes, cpu["weights_offloaded"].bytes) == (64 * 64 * 4, 32 * 64 * 4)


def test_memory_table_shows_share_of_the_gpu_and_each_device():
    from runprof.renderers.run_report import render_memory

    model = torch.nn.Sequential(torch.nn.Linear(64, 64, bias=False), torch.nn.Linear(64, 32, bias=False))
    model[1].to("meta")
    one = render_memory(build_ledger(model, gpu={"cpu": _gpu(64 * 64 * 4, 0, 0, 0, 8 * 2**30)}))
    line = next(x for x in one.splitlines() if x.startswith("nvml_used"))
    assert "10.0%" in line  # 8 GiB (+ 16 KiB) of an 80 GiB device
    two = render_memory(build_ledger(model, gpu={"cpu": _gpu(64 * 64 * 4, 0, 0, 0, 0),
                                                 "meta": _gpu(32 * 64 * 4, 0, 0, 0, 0)}))
    assert "memory (total of 2 devices)" in two and "memory on cpu" in two and "memory on meta" in two
    cpu = render_memory(build_ledger(model, gpu=None))
    assert "memory on" not in cpu and "% of GPU" not in cpu


def test_nvml_handle_follows_cuda_visible_devices(monkeypatch):
    """Without a CUDA device UUID from torch (no GPU here), torch's cuda:i is CUDA_VISIBLE_DEVICES' i-th GPU."""
    asked = []

    class FakeNvml:
        @staticmethod
        def nvmlDeviceGetHandleByUUID(uuid):  # noqa: N802 - pynvml's name
            asked.append(uuid)

        @staticmethod
        def nvmlDeviceGetHandleByIndex(i):  # noqa: N802
            return ("handle", i)

    if torch.cuda.is_available():
        pytest.skip("with a GPU, the handle comes from the device's UUID")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert Nvml._find(FakeNvml, 0) == ("handle", 3)
    assert Nvml._find(FakeNvml, 1) == ("handle", 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert Nvml._find(FakeNvml, 1) == ("handle", 1)
    assert asked == []  # torch knows no CUDA device here, so no UUID was asked for


def test_bad_nvml_interval_is_refused():
    with pytest.raises(runprof.RunprofError, match="nvml_interval_s"):
        runprof.track(torch.nn.Linear(2, 2), nvml_interval_s=0)


def _cache_after_generate(model, prompt: int, new: int):
    ids = torch.randint(3, 100, (2, prompt), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), runprof.track(model) as t:
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                       do_sample=False, pad_token_id=0)
    return _rows(t.result.memory)


@pytest.mark.parametrize("model_type, prompt, new", [
    ("mixtral", 12, 5),  # full attention everywhere
    ("mistral", 20, 5),  # sliding window 16 on every layer: 15 of the 24 positions are kept
    ("deepseek_v2", 12, 5),  # multi-head latent attention: the latent and the rope key are cached
    ("qwen3_next", 12, 5),  # linear-attention layers keep conv/recurrent state, not KV: counted 0
])
def test_kv_estimate_follows_the_attention_kind(model_type, prompt, new):
    from .moe_zoo import tiny_config

    rows = _cache_after_generate(tiny_model(model_type), prompt, new)
    cfg = tiny_config(model_type).get_text_config()
    positions, batch = prompt + new - 1, 2
    if model_type == "deepseek_v2":
        per_layer = cfg.num_hidden_layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * positions
    else:
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kept = min(positions, cfg.sliding_window - 1) if model_type == "mistral" else positions
        attention_layers = sum("linear" not in t for t in getattr(cfg, "layer_types", None) or
                               ["full_attention"] * cfg.num_hidden_layers)
        per_layer = attention_layers * 2 * cfg.num_key_value_heads * head_dim * kept
    assert rows["kv_cache_estimate"].bytes == batch * per_layer * 4  # fp32
    if model_type == "qwen3_next":  # the measured cache also holds the linear layers' state
        assert rows["kv_cache"].bytes > rows["kv_cache_estimate"].bytes
        assert rows["kv_cache_estimate"].detail["other_layers"] == sum("linear" in t for t in cfg.layer_types)
    else:  # sliding-window layers add one int64 of bookkeeping each
        extra = 8 * cfg.num_hidden_layers if model_type == "mistral" else 0
        assert rows["kv_cache"].bytes == rows["kv_cache_estimate"].bytes + extra


def test_4bit_weights_row_counts_packed_storage_and_quantization_state():
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    try:
        q = bnb.nn.Linear4bit(64, 32, bias=False, quant_type="nf4")
        q.weight = bnb.nn.Params4bit(torch.nn.Linear(64, 32, bias=False).weight.data, requires_grad=False,
                                     quant_type="nf4")
        q = q.to("cpu")
    except Exception as e:  # bitsandbytes without a usable backend on this machine
        pytest.skip(f"bitsandbytes 4-bit cannot run here: {e}")
    if getattr(q.weight, "quant_state", None) is None:
        pytest.skip("bitsandbytes did not quantize on this device")
    # 2,048 values packed two per byte: 1,024 B; absmax of 32 blocks of 64, itself quantized to uint8: 32 B;
    # the NF4 code, 16 fp32: 64 B; the absmax offset, 1 fp32: 4 B; the nested absmax, 1 fp32 (one block of
    # 256): 4 B; the nested code, 256 fp32: 1,024 B
    rows = _rows(memory_ledger(q))
    assert rows["weights"].bytes == 1024 + 32 + 64 + 4 + 4 + 1024
