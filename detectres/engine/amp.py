"""Opt-in mixed precision: bf16 autocast (AMX/AVX-512 CPUs and recent GPUs)."""
from __future__ import annotations

import contextlib

import torch


def autocast_context(model: torch.nn.Module, enabled: bool):
    """bf16 autocast on the model's device when ``enabled``; a no-op otherwise."""
    if not enabled:
        return contextlib.nullcontext()
    device_type = next(model.parameters()).device.type
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
