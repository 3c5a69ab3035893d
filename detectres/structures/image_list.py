"""A batch of differently sized images padded into one tensor, with the true sizes kept."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ImageList:
    """``tensor`` is (N, C, Hmax, Wmax); ``image_sizes[i]`` is the (h, w) of image i before padding."""

    tensor: Tensor
    image_sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.image_sizes)

    @staticmethod
    def from_tensors(
        tensors: list[Tensor], size_divisibility: int = 0, pad_value: float = 0.0
    ) -> "ImageList":
        """Pad (C, H, W) tensors at the bottom/right to a common size (optionally a multiple of
        ``size_divisibility``) and stack them.

        While tracing (export) a batch holds one image and the sizes stay graph values: ``image_sizes``
        then holds 0-dim tensors, which :func:`image_sizes_tensor` turns into one tensor either way."""
        if not tensors:
            raise ValueError("ImageList.from_tensors needs at least one image")
        if torch.jit.is_tracing():
            return traced_single(tensors, size_divisibility, pad_value)
        sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
        max_h = max(h for h, _ in sizes)
        max_w = max(w for _, w in sizes)
        if size_divisibility > 1:
            max_h = int(math.ceil(max_h / size_divisibility) * size_divisibility)
            max_w = int(math.ceil(max_w / size_divisibility) * size_divisibility)
        if len(tensors) == 1 and sizes[0] == (max_h, max_w):
            return ImageList(tensors[0].unsqueeze(0), sizes)
        batch = torch.stack(
            [F.pad(t, (0, max_w - t.shape[-1], 0, max_h - t.shape[-2]), value=pad_value) for t in tensors]
        )
        return ImageList(batch, sizes)


def traced_single(tensors: list[Tensor], size_divisibility: int, pad_value: float) -> ImageList:
    """:meth:`ImageList.from_tensors` while tracing: one image, padded by sizes computed in the graph."""
    if len(tensors) != 1:
        raise ValueError(f"a traced (exported) detector takes one image per call, got {len(tensors)}")
    hw = torch._shape_as_tensor(tensors[0])[-2:]
    padded = hw
    if size_divisibility > 1:
        padded = (hw + (size_divisibility - 1)).div(size_divisibility, rounding_mode="floor") * size_divisibility
    extra = padded - hw
    batch = F.pad(tensors[0], [0, extra[1], 0, extra[0]], value=pad_value)[None]
    return ImageList(batch, [(hw[0], hw[1])])


def image_sizes_tensor(image_sizes: list[tuple[int, int]], device: torch.device | str) -> Tensor:
    """(N, 2) int64 (h, w) of a batch's images, from ints or (while tracing) 0-dim tensors."""
    if torch.jit.is_tracing():
        return torch.stack([torch.stack([torch.as_tensor(h), torch.as_tensor(w)]) for h, w in image_sizes]).to(device)
    return torch.tensor(image_sizes, device=device, dtype=torch.long).reshape(-1, 2)
