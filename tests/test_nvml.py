"""The NVML door: every failure becomes a null reading with its cause, never an exception (a fake pynvml
raises each error NVML can raise), the polling thread survives and reports its failure, memory is read with
``nvmlMemory_v2``, and the poller samples on an injected clock (no sleeping)."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from runprof.memory import Nvml, NvmlPoller, Reading
from runprof.results import Cause


class NVMLError(Exception):
    pass


class FakePynvml:
    """pynvml's surface as runprof uses it; ``fail`` names the calls that raise."""

    nvmlMemory_v2 = 0x02000028

    def __init__(self, fail: set[str] = frozenset(), procs=None, v2: bool = True) -> None:
        self.fail, self.procs, self.v2, self.versions = set(fail), procs, v2, []

    def _maybe(self, name: str) -> None:
        if name in self.fail:
            raise NVMLError(f"{name} failed")

    def nvmlInit(self):  # noqa: N802 - pynvml's names
        self._maybe("init")

    def nvmlDeviceGetHandleByUUID(self, uuid):  # noqa: N802
        self._maybe("uuid")
        return ("uuid", uuid)

    def nvmlDeviceGetHandleByIndex(self, i):  # noqa: N802
        self._maybe("index")
        return ("index", i)

    def nvmlDeviceGetMemoryInfo(self, handle, version=None):  # noqa: N802
        self._maybe("memory")
        if version is not None and not self.v2:
            raise TypeError("nvmlDeviceGetMemoryInfo() got an unexpected keyword argument 'version'")
        self.versions.append(version)
        # v1 counts driver-reserved memory as used: 1 GiB more
        used = 5 * 2**30 if version == self.nvmlMemory_v2 else 6 * 2**30
        return SimpleNamespace(total=80 * 2**30, used=used)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):  # noqa: N802
        self._maybe("procs")
        return self.procs or []


@pytest.mark.parametrize("fail", ["init", "index"])
def test_no_handle_degrades_every_reading(fail):
    nv = Nvml(0, module=FakePynvml({fail}))
    for reading in (nv.device_total(), nv.device_used(), nv.process_used()):
        assert reading.value is None and reading.cause is Cause.NVML_UNAVAILABLE
        assert f"{fail} failed" in reading.detail["error"]


def test_a_failing_memory_call_mid_run_is_a_null_reading():
    fake = FakePynvml()
    nv = Nvml(0, module=fake)
    assert nv.device_total() == Reading(80 * 2**30)
    fake.fail.add("memory")
    r = nv.device_used()
    assert r.value is None and r.cause is Cause.NVML_UNAVAILABLE and "memory failed" in r.detail["error"]


def test_memory_is_read_with_v2_and_falls_back_without_it():
    fake = FakePynvml()
    assert Nvml(0, module=fake).device_used() == Reading(5 * 2**30)
    assert fake.versions == [FakePynvml.nvmlMemory_v2]
    old = FakePynvml(v2=False)  # an nvidia-ml-py without the version argument: v1 it is
    assert Nvml(0, module=old).device_used() == Reading(6 * 2**30)


def test_process_figures(monkeypatch):
    import os

    mine = SimpleNamespace(pid=os.getpid(), usedGpuMemory=123)
    other = SimpleNamespace(pid=os.getpid() + 1, usedGpuMemory=999)
    assert Nvml(0, module=FakePynvml(procs=[other, mine])).process_used() == Reading(123)
    hidden = Nvml(0, module=FakePynvml(procs=[other])).process_used()
    assert hidden.cause is Cause.NVML_PROCESS_HIDDEN and hidden.detail == {"pid": os.getpid()}
    no_figure = Nvml(0, module=FakePynvml(procs=[SimpleNamespace(pid=os.getpid(), usedGpuMemory=None)]))
    assert no_figure.process_used().cause is Cause.NVML_PROCESS_HIDDEN
    broken = Nvml(0, module=FakePynvml({"procs"})).process_used()
    assert broken.cause is Cause.NVML_PROCESS_LIST_UNAVAILABLE and "procs failed" in broken.detail["error"]


def test_the_handle_comes_from_the_uuid_when_torch_knows_it(monkeypatch):
    """Under MIG torch's device UUID names the slice (MIG-...): that handle, not the physical GPU's."""
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid="MIG-abc"))
    assert Nvml._find(FakePynvml(), 0) == ("uuid", "MIG-abc")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid="1234-5678"))
    assert Nvml._find(FakePynvml(), 0) == ("uuid", "GPU-1234-5678")


class Clock:
    """An injected wait: the poller's thread blocks here until the test lets it take ``n`` more samples."""

    def __init__(self) -> None:
        self.cond, self.allowed, self.waits, self.stopped = threading.Condition(), 0, [], False

    def wait(self, interval: float) -> bool:
        with self.cond:
            self.waits.append(interval)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.allowed > 0 or self.stopped)
            if self.stopped:
                return True
            self.allowed -= 1
            return False

    def step(self, n: int) -> None:
        with self.cond:
            self.allowed += n
            self.cond.notify_all()
            self.cond.wait_for(lambda: len(self.waits) >= n + 1 or self.stopped)


def test_poller_samples_at_its_interval_and_keeps_the_peak():
    class Fake:
        calls = 0

        def process_used(self):
            Fake.calls += 1
            return _hidden() if Fake.calls % 2 else Reading(1000 * Fake.calls)

        def device_used(self):  # the device-level figure stands in when the process's is unknown
            return Reading(7)

    clock = Clock()
    poller = NvmlPoller(Fake(), interval_s=0.25, wait=clock.wait)
    with poller:
        clock.step(5)  # 6 samples: the first, then one after each of 5 waits
        with clock.cond:
            clock.stopped = True
            clock.cond.notify_all()
    assert poller.samples == Fake.calls == 6 and set(clock.waits) == {0.25}
    assert poller.peak == 6000 and poller.reading() == Reading(6000)  # the even calls: 2000, 4000, 6000


def test_poller_survives_a_failing_reading():
    class Broken:
        def process_used(self):
            raise RuntimeError("GPU fell off the bus")

    poller = NvmlPoller(Broken(), interval_s=0.01)
    with poller:
        poller._thread.join(timeout=5)
    assert not poller._thread.is_alive()
    r = poller.reading()
    assert r.value is None and r.cause is Cause.NVML_UNAVAILABLE and "fell off the bus" in r.detail["error"]


def _hidden() -> Reading:
    return Reading.unknown(Cause.NVML_PROCESS_HIDDEN, pid=1)
