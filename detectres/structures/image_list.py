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
        ``size_divisibility``) and stack them."""
        if not tensors:
            raise ValueError("ImageList.from_tensors needs at least one image")
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
