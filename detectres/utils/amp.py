"""Opt-in mixed precision: ``runtime.amp=bf16`` (or ``true``) or ``runtime.amp=fp16`` autocast; off unless asked.

bf16 keeps fp32's range and needs no loss scaling. fp16 needs a :class:`torch.amp.GradScaler`, which
:func:`grad_scaler` provides (a no-op otherwise).

On a CPU, low precision is a speed-up only where the processor computes in it natively (bf16: AMX or
AVX-512-BF16; fp16: AMX-FP16 or AVX-512-FP16). Elsewhere oneDNN emulates it and a model runs several
times slower than in fp32, so :func:`effective_dtype` detects the processor at run time and, when it
lacks the instructions, warns once and runs fp32. Precision is always a runtime choice of the caller
(``runtime.amp``), never taken from how a checkpoint was trained.
"""
from __future__ import annotations

import contextlib
import functools
import warnings

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# the CPU instructions that run each dtype natively (names as torch.cpu.get_capabilities() gives them)
NATIVE_CPU_FEATURES = {torch.bfloat16: ("amx_bf16", "avx512_bf16"), torch.float16: ("amx_fp16", "avx512_fp16")}


def amp_dtype(amp: bool | str | None) -> torch.dtype | None:
    """The autocast dtype ``amp`` asks for: None for false/off, bf16 for true/bf16, fp16 for fp16."""
    if amp in (None, False, "false", "off"):
        return None
    if amp is True or amp == "true":
        return torch.bfloat16
    if amp in AMP_DTYPES:
        return AMP_DTYPES[amp]
    raise ValueError(f"amp={amp!r}: choose false, true (= bf16), bf16 or fp16")


@functools.lru_cache(maxsize=None)
def cpu_features() -> dict:
    """This processor's name, torch's kernel level (``get_cpu_capability``) and its native low-precision
    instructions, detected at run time."""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    native = {dtype: [f for f in feats if caps.get(f)] for dtype, feats in NATIVE_CPU_FEATURES.items()}
    return {"name": caps.get("cpu_name", "unknown CPU"), "capability": torch.backends.cpu.get_cpu_capability(),
            "native": native}


def cpu_runs_natively(dtype: torch.dtype) -> bool:
    """Whether this CPU has instructions that compute in ``dtype`` (bf16 / fp16) at full speed."""
    return bool(cpu_features()["native"].get(dtype))


def describe_cpu() -> str:
    """One line for logs and benchmarks, e.g. ``CPU AMD EPYC: AVX512, bf16 native (avx512_bf16), fp16 emulated``."""
    f = cpu_features()
    parts = [f"{name} {'native (' + ', '.join(f['native'][dtype]) + ')' if f['native'][dtype] else 'emulated'}"
             for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16))]
    return f"CPU {f['name']}: {f['capability']}, " + ", ".join(parts)


@functools.lru_cache(maxsize=None)
def _warn_emulated(amp: str) -> None:
    message = (f"runtime.amp={amp}: this CPU ({describe_cpu()}) has no native {amp} instructions, where "
               f"{amp} runs several times slower than fp32; running fp32 instead")
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def effective_dtype(amp: bool | str | None, device_type: str) -> torch.dtype | None:
    """The autocast dtype to run ``amp`` with on ``device_type``: ``amp_dtype(amp)``, except on a CPU that
    would emulate it, where it is None (fp32) after one warning."""
    dtype = amp_dtype(amp)
    if dtype is not None and device_type == "cpu" and not cpu_runs_natively(dtype):
        _warn_emulated("bf16" if dtype == torch.bfloat16 else "fp16")
        return None
    return dtype


def precision_name(amp: bool | str | None, device_type: str) -> str:
    """What a run computes in: ``fp32``, ``bf16`` or ``fp16`` (after the CPU check)."""
    dtype = effective_dtype(amp, device_type)
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast_context(model: torch.nn.Module, amp: bool | str | None):
    """Autocast on the model's device in the dtype ``amp`` asks for (see :func:`effective_dtype`); a no-op
    when it is off."""
    device = getattr(model, "device", None)  # a model without parameters (an engine) names its device
    device_type = (device if isinstance(device, torch.device) else next(model.parameters()).device).type
    dtype = effective_dtype(amp, device_type)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def grad_scaler(amp: bool | str | None, device_type: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (skips steps whose gradients overflow); disabled for bf16 and fp32."""
    return torch.amp.GradScaler(device_type, enabled=effective_dtype(amp, device_type) == torch.float16)


def fp32_only(tensor: torch.Tensor):
    """A context that turns autocast off on ``tensor``'s device: layers whose outputs must stay fp32
    under amp (box-delta output layers) run inside it on fp32 inputs."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)
