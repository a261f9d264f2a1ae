"""Checks made before a weight is read: the device, the dtype, what a random-init build would need, the
safetensors headers of a local folder. Each failure is one :class:`~runprof.errors.RunprofError` line."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, InvalidArgumentError
from ..static import build_meta_model
from .resolve import EXPERT_FIELDS, int_field, text_config

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
RUNNABLE_DEVICES = ("cpu", "cuda", "mps", "xpu")
"""Device types a model can run on (``meta`` has shapes but no values)."""


def first_line(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def parse_dtype(text: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"`` -> ``torch.bfloat16``; ``"auto"``/``None`` -> ``None`` (the checkpoint's own dtype); a torch
    dtype is kept; anything else is one line."""
    if text in (None, "auto"):
        return None
    if isinstance(text, torch.dtype):
        return text
    try:
        return _DTYPES[text]
    except (KeyError, TypeError):
        raise InvalidArgumentError.bad("dtype", text, f"expected a torch dtype or one of auto, {', '.join(_DTYPES)}") \
            from None


def parse_device(text: str | None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a device that cannot run a model here is an error.

    Accepted: ``cpu``, ``cuda``/``cuda:N`` (N below the GPU count), ``mps`` and ``xpu`` where available.

    >>> parse_device("cpu")
    device(type='cpu')
    >>> parse_device("meta")
    Traceback (most recent call last):
    ...
    runprof.errors.InvalidArgumentError: device='meta': a model cannot run on meta ...
    """
    if text in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(text, str):
        raise InvalidArgumentError.bad("device", text, "expected a torch.device or one of cpu, cuda, cuda:N, mps, xpu, "
                                       "auto")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidArgumentError.bad("device", text, "no CUDA GPU is available here; use cpu or auto")
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError) as e:
        raise InvalidArgumentError.bad("device", text, "expected cpu, cuda, cuda:N, mps, xpu or auto") from e
    return check_device(dev, text)


def _backend(kind: str) -> tuple[bool, int]:
    """(available, device count) of a device type, without touching any device's memory."""
    if kind == "cpu":
        return True, 1
    if kind == "cuda":
        return torch.cuda.is_available(), torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "mps":
        return torch.backends.mps.is_available(), 1
    xpu = getattr(torch, "xpu", None)
    return (True, xpu.device_count()) if xpu is not None and xpu.is_available() else (False, 0)


def check_device(dev: torch.device, text: str | None = None) -> torch.device:
    """``dev`` when a model can run there now; InvalidArgumentError (meta, a missing backend or index) else."""
    label = text or str(dev)
    if dev.type not in RUNNABLE_DEVICES:
        why = "meta tensors have shapes but no values" if dev.type == "meta" else "runprof runs on cpu, cuda, mps, xpu"
        raise InvalidArgumentError.bad("device", label, f"a model cannot run on {dev.type} ({why}); use cpu, cuda, "
                                       "cuda:N, mps, xpu or auto (static counts need no device)")
    available, count = _backend(dev.type)
    if not available:
        raise InvalidArgumentError.bad("device", label, f"no {dev.type} device is available here; use cpu or auto")
    if dev.type != "cpu" and dev.index is not None and dev.index >= count:
        raise InvalidArgumentError.bad(
            "device", label, f"this machine has {count} {dev.type} device{'s' if count != 1 else ''} "
            f"({dev.type}:0..{dev.type}:{count - 1}); pick one of those or auto")
    return dev


def check_weight_files(folder: str | os.PathLike[str]) -> None:
    """Open the header of every ``*.safetensors`` file in ``folder`` (no weight is read): a truncated or
    corrupt file is a CheckpointError naming it, before the model is built."""
    from safetensors import SafetensorError, safe_open

    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise CheckpointError(
                f"{path}: truncated or corrupt safetensors file ({first_line(e)}); re-download it or save it again "
                f"(`python -m runprof count {folder}` needs no weights)"
            ) from e


def available_bytes(dev: torch.device) -> int | None:
    """Memory a model built on ``dev`` may take: CPU: MemAvailable, capped by a cgroup limit; CUDA: the GPU's
    total memory (its free memory is read by ``runprof.memory``, the one caller of the allocator's API);
    None where unknown."""
    if dev.type == "cuda":
        return int(torch.cuda.get_device_properties(dev).total_memory)
    if dev.type != "cpu":
        return None
    have = None
    try:
        found = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        have = int(found[1]) * 1024 if found else None
        limit, used = (Path(f"/sys/fs/cgroup/memory.{f}").read_text().strip() for f in ("max", "current"))
        if limit.isdigit() and used.isdigit():  # a container's limit (cgroup v2) may be below MemAvailable
            have = min(have if have is not None else int(limit), int(limit) - int(used))
    except (OSError, ValueError):
        pass
    return have


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if scale <= n < 2**70:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes" if n < 2**20 else f"{n:.2e} bytes"


def check_buildable(config: Any, name: str, dev: torch.device, dtype: torch.dtype | None = None) -> None:
    """Build ``config`` on the meta device (no memory) and refuse what cannot be built for real on ``dev``:
    a config whose MoE layers have no experts, or weights larger than the memory ``dev`` has.

    >>> from transformers import MixtralConfig
    >>> cfg = MixtralConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
    ...                     num_key_value_heads=1, vocab_size=64, num_local_experts=0)
    >>> check_buildable(cfg, "tiny", torch.device("cpu"))
    Traceback (most recent call last):
    ...
    runprof.errors.InvalidArgumentError: tiny: num_local_experts 0 builds MoE layers without experts ...
    """
    meta = build_meta_model(config, dtype, name=name)
    declared = [f for cfg in (config, text_config(config)) if (f := int_field(cfg, EXPERT_FIELDS)) is not None]
    empty = [(n, tuple(p.shape)) for n, p in meta.named_parameters() if p.numel() == 0]
    if empty and any(count == 0 for _, count in declared):
        attr = next(a for a, count in declared if count == 0)
        raise InvalidArgumentError(
            f"{name}: {attr} 0 builds MoE layers without experts ({empty[0][0]} has shape {list(empty[0][1])}); "
            f"set {attr} to at least the top-k, or use a dense config"
        )
    need = sum(t.numel() * t.element_size() for t in [*meta.parameters(), *meta.buffers()])
    have = available_bytes(dev)
    if have is not None and need > have:
        params = sum(p.numel() for p in meta.parameters())
        raise InvalidArgumentError(
            f"{name}: random weights need {_size(need)} ({params:,} parameters) on {dev}, which has {_size(have)} "
            "available; keep fewer layers, use bf16 or a smaller config (static counts need no memory)"
        )


