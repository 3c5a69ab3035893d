"""Opt-in mixed precision: ``runtime.amp=bf16`` (or ``true``) or ``runtime.amp=fp16`` autocast; off unless asked.

bf16 keeps fp32's range and needs no loss scaling (AMX/AVX-512 CPUs, Ampere and later GPUs). fp16
needs a :class:`torch.amp.GradScaler`, which :func:`grad_scaler` provides (a no-op otherwise).
"""
from __future__ import annotations

import contextlib

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: bool | str | None) -> torch.dtype | None:
    """The autocast dtype ``amp`` asks for: None for false/off, bf16 for true/bf16, fp16 for fp16."""
    if amp in (None, False, "false", "off"):
        return None
    if amp is True or amp == "true":
        return torch.bfloat16
    if amp in AMP_DTYPES:
        return AMP_DTYPES[amp]
    raise ValueError(f"amp={amp!r}: choose false, true (= bf16), bf16 or fp16")


def autocast_context(model: torch.nn.Module, amp: bool | str | None):
    """Autocast on the model's device in the dtype ``amp`` asks for; a no-op when it is off."""
    dtype = amp_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    device_type = next(model.parameters()).device.type
    return torch.autocast(device_type=device_type, dtype=dtype)


def grad_scaler(amp: bool | str | None, device_type: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (skips steps whose gradients overflow); disabled for bf16 and fp32."""
    return torch.amp.GradScaler(device_type, enabled=amp_dtype(amp) == torch.float16)
