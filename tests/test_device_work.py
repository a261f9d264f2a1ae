"""What runprof asks of the device, checked on the CPU: where timing events are recorded and synchronized,
and which host<->device copies a snapshot and the JetMoE adapter make (counted with a ``__torch_function__``
spy, so each test fails if a per-tensor or per-call copy comes back)."""
from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from runprof.moe.builtin import JetMoeAdapter
from runprof.routing.timing import StepClock
from runprof.snapshots import fingerprint, snapshot

from .moe_zoo import tiny_model

#: calls that build a tensor from host data, copy one, or move one between devices ("to" with a device)
COPIES = {"tensor", "as_tensor", "to", "cpu", "cuda", "copy_", "contiguous", "clone"}


class Spy(TorchFunctionMode):
    """Records the name of every torch function and Tensor method called inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        kwargs = kwargs or {}
        if name == "to" and not any(isinstance(a, (str, torch.device)) for a in (*args[1:], kwargs.get("device"))):
            name = "to(dtype)"  # a cast on the tensor's own device, not a transfer
        self.calls.append(name)
        return func(*args, **kwargs)

    def count(self, *names: str) -> int:
        return sum(self.calls.count(n) for n in names)


# --- StepClock on the model's device -----------------------------------------------------------------

def test_step_clock_records_and_synchronizes_on_its_own_device(monkeypatch):
    """A model on cuda:1 while the current device is cuda:0: every event goes on cuda:1's current stream and
    the one synchronize is of cuda:1 (recording on the current device's stream times only host enqueueing)."""
    recorded: list[object] = []
    synced: list[object] = []

    class FakeEvent:
        def __init__(self, enable_timing: bool = False) -> None:
            assert enable_timing
            self.at = 0

        def record(self, stream=None) -> None:
            recorded.append(stream)
            self.at = len(recorded)

        def elapsed_time(self, other: "FakeEvent") -> float:
            return 1000.0 * (other.at - self.at)  # ms: mark i is i seconds after the start

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: f"stream of {device}")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    clock = StepClock(torch.device("cuda", 1))
    clock.start()
    clock.mark()
    clock.mark()
    assert recorded == ["stream of cuda:1"] * 3
    assert clock.prefill_decode_s() == (1.0, 1.0)  # marks at 1 s and 2 s after the start
    assert synced == [torch.device("cuda", 1)]


def test_step_clock_on_cpu_uses_the_wall_clock():
    clock = StepClock("cpu")
    clock.start()
    clock.mark()
    (s,) = clock.seconds()
    assert not clock.cuda and 0 <= s < 1


# --- snapshots: one transfer per device, no host->device copy -----------------------------------------

def test_snapshot_copies_nothing_per_tensor_and_transfers_once(monkeypatch):
    """Six tensors (two not contiguous), each read in many windows: no tensor is built from host data, the
    non-contiguous ones are flattened once each (reshape copies them; before, every window copied again),
    and the digests come to the host in one ``.cpu()``."""
    torch.manual_seed(0)
    base = torch.randn(40, 30)
    state = {"a": base, "t": base.t(), "strided": torch.randn(50, 8)[::2], "b": torch.arange(1000),
             "h": torch.randn(300).to(torch.bfloat16), "flag": torch.rand(500) > 0.5}
    monkeypatch.setattr(fingerprint, "WINDOW_BYTES", 256)  # 1200 floats -> 19 windows of 64 elements
    with Spy() as spy:
        snap = snapshot(state)
    assert spy.count("tensor", "as_tensor") == 0, spy.calls
    assert spy.count("cpu") == 1
    assert spy.count("reshape") == len(state)  # one flatten per tensor, a copy only for "t" and "strided"
    assert not spy.count("to", "cuda", "copy_", "contiguous", "clone"), spy.calls
    # same bytes, same digest: windows and layout change nothing
    monkeypatch.setattr(fingerprint, "WINDOW_BYTES", 64 << 20)
    whole = snapshot({k: v.contiguous() for k, v in state.items()})
    assert {k: fp.digest for k, fp in snap.tensors.items()} == {k: fp.digest for k, fp in whole.tensors.items()}
    assert snap.tensors["t"].digest != snap.tensors["a"].digest


def test_moduli_are_built_with_device_ops():
    with Spy() as spy:
        mods = fingerprint.moduli("cpu")
    assert mods.tolist() == [2**61 - 1] + [2**31 - 1] * 3
    assert not COPIES & set(spy.calls), spy.calls


# --- JetMoE: ids from the router's own tensors --------------------------------------------------------

def _ids_from_sorted_slots(output: tuple, k: int) -> torch.Tensor:
    """The reconstruction the adapter used to make (it copies ``expert_size``, a list, to the device)."""
    index_sorted, _, _, expert_size, _ = output
    sizes = torch.as_tensor(expert_size)
    slot_expert = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)
    return torch.empty_like(index_sorted).scatter_(0, index_sorted, slot_expert).view(-1, k)


@pytest.mark.parametrize("router", ["model.layers.0.mlp.router", "model.layers.1.self_attention.experts.router"])
def test_jetmoe_ids_without_a_host_to_device_copy(router):
    """MoE and mixture-of-attention routers: the adapter's ids are the router's sort, expert by expert, and
    its weights the router's gates in token order, with no tensor built from the ``expert_size`` list."""
    model = tiny_model("jetmoe")
    gate = model.get_submodule(router)
    hidden = torch.randn(13, model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        output = gate(hidden)
        assert isinstance(output[3], list)  # transformers hands the sizes back as a Python list
        with Spy() as spy:
            ids, weights = JetMoeAdapter().from_router_output(output)
    assert not COPIES & set(spy.calls), spy.calls
    k = gate.top_k  # 2; 13 tokens x 2 slots = 26 = index_sorted.numel()
    assert ids.shape == weights.shape == (13, k)
    assert torch.equal(ids.sort(-1).values, _ids_from_sorted_slots(output, k).sort(-1).values)
    logits = output[4]
    expected = torch.softmax(logits.gather(1, ids), dim=-1)  # the router's gates: softmax of its top-k logits
    assert torch.allclose(weights, expected.to(weights.dtype))
