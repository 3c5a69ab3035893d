"""How much memory a training batch needs, estimated cheaply before the first step, so that a batch the
machine cannot hold is refused in one line instead of failing (or swapping) minutes later.

The estimate counts what autograd keeps for the backward pass of the backbone: two small forward passes
(square images of :data:`PROBE_SIDES` pixels) through the model's real backbone, every tensor saved for
backward counted once by its storage (parameters and buffers left out). Exactly linear in the pixels, it
is extrapolated to the smallest image training can see (:func:`smallest_image_pixels`). The heads are left out, so it is a lower bound: a batch refused by it cannot fit.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from detectres.utils.amp import autocast_context

PROBE_SIDES = (128, 192)
CRUDE_RATIO = 200  # saved backbone activations per byte of fp32 input, well above any ResNet's (R50-FPN: 56)


def saved_bytes(backbone: nn.Module, side: int, device: torch.device, amp) -> int:
    """Bytes autograd keeps for the backward pass of one training forward of ``backbone`` on one
    ``side`` x ``side`` image."""
    own = {t.untyped_storage().data_ptr() for t in [*backbone.parameters(), *backbone.buffers()]}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    image = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(side)).to(device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast_context(backbone, amp):
        backbone(image)
    return sum(kept.values())


def activation_bytes(model: nn.Module, pixels: int, amp=None) -> int:
    """Estimated bytes of the backbone's saved activations for one training image of ``pixels`` pixels.
    The model's buffers (BatchNorm statistics) are left as they were."""
    device = getattr(model, "device", torch.device("cpu"))
    buffers = {name: b.detach().clone() for name, b in model.backbone.named_buffers()}
    small, large = (saved_bytes(model.backbone, side, device, amp) for side in PROBE_SIDES)
    with torch.no_grad():
        for name, b in model.backbone.named_buffers():
            b.copy_(buffers[name])
    per_pixel = max(0.0, (large - small) / (PROBE_SIDES[1] ** 2 - PROBE_SIDES[0] ** 2))
    return int(small + per_pixel * (pixels - PROBE_SIDES[0] ** 2))


def available_bytes(device: torch.device) -> int | None:
    """Free accelerator memory, or the system's available memory (Linux ``MemAvailable``); None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def smallest_image_pixels(min_sizes, max_size: int, aspect_ratios) -> int:
    """The fewest pixels a training image can have after the shortest-edge resize: the smallest short side
    on a square image, or, where the long-side cap binds, the most elongated image at the cap."""
    ratios = np.asarray(aspect_ratios, np.float64)
    elongation = float(np.maximum(ratios, 1 / ratios).max()) if ratios.size else 1.0
    side = min(min_sizes)
    return int(min(side * side, max_size * max_size / max(elongation, 1.0)))


def check_batch_memory(model: nn.Module, *, ims_per_batch: int, world: int, min_pixels: int, amp=None) -> None:
    """Refuse a batch whose activations alone (a lower bound) exceed the memory this process can use: the
    free accelerator memory for its share of the batch, or on CPUs the machine's available memory for the
    share of every process on this machine."""
    device = getattr(model, "device", torch.device("cpu"))
    available = available_bytes(device)
    if available is None:
        return
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world)) if device.type == "cpu" else 1
    images = -(-ims_per_batch // world) * local
    if images * min_pixels * 3 * 4 * CRUDE_RATIO <= available:
        return  # fits by a wide margin: no probe (it costs a second on a CPU)
    needed = images * activation_bytes(model, min_pixels, amp)
    if needed > available:
        where = f"{device} has {available / 1e9:.1f} GB free" if device.type == "cuda" else \
            f"this machine has {available / 1e9:.1f} GB available"
        raise ValueError(f"solver.ims_per_batch={ims_per_batch}: {images} image(s) at once need at least "
                         f"{needed / 1e9:.1f} GB for activations ({min_pixels / 1e6:.2f} Mpx each, the smallest a "
                         f"training image can be) but {where}: "
                         "lower solver.ims_per_batch")
