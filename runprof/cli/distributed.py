"""``--distributed`` under torchrun: joining the process group torchrun describes, and each rank's prompts."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from ..errors import InvalidArgumentError


def split_prompts(prompts: list[str], rank: int, world_size: int) -> list[str]:
    """Rank ``rank``'s share of the prompts (data parallel: every ``world_size``-th one, from ``rank``).

    >>> split_prompts(["a", "b", "c"], 1, 2)
    ['b']
    """
    if len(prompts) < world_size:
        raise InvalidArgumentError(
            f"--distributed: {len(prompts)} prompt(s) for {world_size} ranks; give at least one line per rank "
            "(--prompt FILE --lines)")
    return prompts[rank::world_size]


@contextlib.contextmanager
def process_group_from_env(device: torch.device) -> Iterator[tuple[torch.device, int, int]]:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``):
    NCCL for CUDA, gloo for CPU. Yields ``(device, rank, world_size)``, a bare ``cuda`` device becoming
    ``cuda:LOCAL_RANK``; destroys the group on exit if it created it.

    >>> with process_group_from_env(torch.device("cpu")) as (device, rank, world):  # doctest: +SKIP
    ...     ...
    """
    import torch.distributed as dist

    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing and not dist.is_initialized():
        raise InvalidArgumentError(
            f"--distributed: {', '.join(missing)} not set; launch with torchrun --nproc-per-node N -m runprof ..."
        )
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device, dist.get_rank(), dist.get_world_size()
    finally:
        if created:
            dist.destroy_process_group()
