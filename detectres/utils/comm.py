"""Multi-process runs through ``torch.distributed``, started by ``torchrun`` (env:// rendezvous).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; without them everything here is a single process and every call is a no-op. NCCL
serves GPUs and gloo CPUs. A collective that waits longer than ``timeout_s`` (a rank died or hangs)
raises, so the other ranks exit non-zero instead of hanging.
"""
from __future__ import annotations

import datetime
import logging
import os
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(timeout_s: float = 1800.0, device: str = "auto") -> tuple[int, int]:
    """Join the process group ``torchrun`` describes, NCCL when ``device`` is a GPU (``auto``: when
    one is available), gloo otherwise; returns (rank, world size)."""
    if env_world_size() <= 1 or dist.is_initialized():
        return get_rank(), get_world_size()
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank())
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # a timed-out collective aborts the process
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, init_method="env://", timeout=datetime.timedelta(seconds=timeout_s))
    logger.info("rank %d of %d joined (%s, timeout %.0f s)", get_rank(), get_world_size(), backend, timeout_s)
    return get_rank(), get_world_size()


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return get_rank() == 0


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (picklable Python objects; used for evaluation results)."""
    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``values`` across ranks (a detached copy)."""
    values = values.detach().clone()
    if get_world_size() > 1:
        dist.all_reduce(values)
        values /= get_world_size()
    return values
