"""Anchor boxes for a single stride-``stride`` feature map (the C4 layout has one).

Order: cell anchors are size-major (for each size, for each aspect ratio), unrounded,
centred on (0, 0); the full set is location-major: index = (y * W + x) * A + a, as Detectron2.
"""
from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import Tensor, nn

from detectres.config.schema import Fraction, NonEmpty, PositiveFloat, PositiveInt


def make_cell_anchors(sizes: list[float], aspect_ratios: list[float]) -> Tensor:
    """(A, 4) anchors centred at 0 with area size**2 and height/width = ratio."""
    anchors = []
    for size in sizes:
        area = float(size) ** 2
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors, dtype=torch.float32)


class AnchorGenerator(nn.Module):
    """Places ``len(sizes) * len(aspect_ratios)`` anchors at every feature-map cell, ``stride`` input
    pixels apart (the RPN passes its backbone's stride)."""

    def __init__(self, *, sizes: Annotated[list[PositiveFloat], NonEmpty()],
                 aspect_ratios: Annotated[list[PositiveFloat], NonEmpty()], stride: PositiveInt,
                 offset: Fraction = 0.0):
        super().__init__()
        self.stride = int(stride)
        self.offset = float(offset)
        self.register_buffer("cell_anchors", make_cell_anchors(list(sizes), list(aspect_ratios)), persistent=False)
        self._cache: dict[tuple, Tensor] = {}

    @property
    def num_anchors(self) -> int:
        return self.cell_anchors.shape[0]

    def forward(self, feature_hw: tuple[int, int]) -> Tensor:
        """(H * W * A, 4) anchors in input-image pixels for a feature map of size (H, W)."""
        key = (int(feature_hw[0]), int(feature_hw[1]), self.cell_anchors.device)
        if key not in self._cache:
            self._cache = {key: self._grid(*feature_hw)}
        return self._cache[key]

    def _grid(self, height: int, width: int) -> Tensor:
        device = self.cell_anchors.device
        xs = torch.arange(width, dtype=torch.float32, device=device) * self.stride + self.offset * self.stride
        ys = torch.arange(height, dtype=torch.float32, device=device) * self.stride + self.offset * self.stride
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
        return (shifts + self.cell_anchors.reshape(1, -1, 4)).reshape(-1, 4)
