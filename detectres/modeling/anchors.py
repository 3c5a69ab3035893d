"""Anchor boxes for one or more feature maps (the C4 layout has one, stride 16; FPN five, P2..P6).

Order: cell anchors are size-major (for each size, for each aspect ratio), unrounded,
centred on (0, 0); each level's set is location-major: index = (y * W + x) * A + a, as Detectron2.
"""
from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import Tensor, nn

from detectres.config.constraints import AnchorSize, AspectRatio, Fraction, MaxLength, NonEmpty, PositiveInt


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
    """Places anchors at every cell of each feature map, ``strides[l]`` input pixels apart on level l
    (the RPN passes its backbone's strides: one for C4, P2..P6 for FPN).

    ``sizes``: a flat list (every size on every level: the C4 layout) or one list per level (Detectron2's
    ``[[32], [64], [128], [256], [512]]`` for FPN); a single inner list applies to all levels. Every level
    has ``len(sizes) * len(aspect_ratios)`` anchors per cell, so one RPN head serves them all.
    """

    def __init__(self, *, sizes: Annotated[list[AnchorSize], NonEmpty(), MaxLength(64)]
                 | Annotated[list[Annotated[list[AnchorSize], MaxLength(64)]], NonEmpty(), MaxLength(16)],
                 aspect_ratios: Annotated[list[AspectRatio], NonEmpty(), MaxLength(64)],
                 strides: Annotated[list[PositiveInt], NonEmpty()], offset: Fraction = 0.0):
        super().__init__()
        per_level = level_sizes(list(sizes), len(strides))
        if len({len(s) for s in per_level}) != 1:
            raise ValueError(f"anchor sizes {list(sizes)}: every level needs the same number of sizes (one RPN head)")
        self.strides = [int(s) for s in strides]
        self.offset = float(offset)
        for level, level_sizes_ in enumerate(per_level):
            self.register_buffer(f"cell_anchors_{level}", make_cell_anchors(level_sizes_, list(aspect_ratios)),
                                 persistent=False)
        self._cache: dict[tuple, list[Tensor]] = {}

    @property
    def cell_anchors(self) -> list[Tensor]:
        """Per level, the (A, 4) anchors of one cell, centred at 0."""
        return [getattr(self, f"cell_anchors_{level}") for level in range(len(self.strides))]

    @property
    def num_anchors(self) -> int:
        """Anchors per cell (the same on every level)."""
        return self.cell_anchors[0].shape[0]

    def forward(self, feature_hws: list[tuple[int, int]]) -> list[Tensor]:
        """Per level, (H * W * A, 4) anchors in input-image pixels for feature maps of sizes (H, W)."""
        if torch.jit.is_tracing():  # the sizes are graph values (export): no cache keyed by them
            return [self._grid(cells, stride, h, w) for cells, stride, (h, w) in zip(self.cell_anchors, self.strides, feature_hws)]
        key = (tuple((int(h), int(w)) for h, w in feature_hws), self.cell_anchors[0].device)
        if key not in self._cache:
            if len(feature_hws) != len(self.strides):
                raise ValueError(f"{len(feature_hws)} feature maps for anchors on {len(self.strides)} strides")
            self._cache = {key: [self._grid(cells, stride, h, w) for cells, stride, (h, w)
                                 in zip(self.cell_anchors, self.strides, key[0])]}
        return self._cache[key]

    def _grid(self, cell_anchors: Tensor, stride: int, height: int, width: int) -> Tensor:
        device = cell_anchors.device
        xs = torch.arange(width, dtype=torch.float32, device=device) * stride + self.offset * stride
        ys = torch.arange(height, dtype=torch.float32, device=device) * stride + self.offset * stride
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
        return (shifts + cell_anchors.reshape(1, -1, 4)).reshape(-1, 4)


def level_sizes(sizes: list, num_levels: int) -> list[list[float]]:
    """The anchor sizes of each level (see :class:`AnchorGenerator`)."""
    if all(isinstance(s, (int, float)) for s in sizes):
        if num_levels != 1:
            raise ValueError(f"anchor sizes {sizes} are one flat list but there are {num_levels} feature levels; "
                             f"give one list per level, e.g. {[[s] for s in sizes]}")
        return [list(sizes)]
    if len(sizes) == 1:
        return [list(sizes[0])] * num_levels
    if len(sizes) != num_levels:
        raise ValueError(f"anchor sizes {sizes}: {len(sizes)} lists for {num_levels} feature levels")
    return [list(s) for s in sizes]
