"""Memory ledger: the only importer of pynvml and caller of ``torch.cuda`` memory APIs."""
from .collector import MemoryCollector, cuda_devices, memory_ledger
from .kv import cache_bytes, cache_bytes_by_device, kv_estimate
from .ledger import GpuReadings, build_ledger, bytes_by_device
from .sources import Nvml, NvmlPoller, Reading

__all__ = ["GpuReadings", "MemoryCollector", "Nvml", "NvmlPoller", "Reading", "build_ledger", "bytes_by_device",
           "cache_bytes", "cache_bytes_by_device", "cuda_devices", "kv_estimate", "memory_ledger"]
