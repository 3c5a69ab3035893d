"""The run's environment: device, threads, seeds and deterministic kernels."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from detectres.utils.comm import local_world_size


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is available, else ``cpu``; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def set_threads(num_threads: int | None, num_workers: int = 0) -> int:
    """Use the cores left after data workers, shared among the processes ``torchrun`` started on this
    machine (never oversubscribe); returns the thread count."""
    if num_threads is None or num_threads <= 0:
        per_process = (os.cpu_count() or 1) // max(1, local_world_size())
        num_threads = max(1, per_process - num_workers)
    torch.set_num_threads(num_threads)
    return num_threads


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool) -> None:
    """Deterministic kernels where PyTorch has them (a warning names any op that has none)."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
