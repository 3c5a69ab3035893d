"""RoI feature extraction from one feature map: RoIAlign (aligned, as ROIAlignV2) or RoIPool."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align, roi_pool

from detectres.config.schema import NonNegativeInt, PositiveFloat, PositiveInt


class RoIPooler(nn.Module):
    """Pool (R, C, S, S) features for boxes given in input-image pixels.

    ``kind="align"`` is RoIAlign with ``aligned`` (half-pixel correction, Detectron2's
    ROIAlignV2); ``kind="pool"`` is the original Fast R-CNN RoIPool used in the ResNet paper.
    ``spatial_scale`` is 1 / the features' stride; the RoI heads pass it from the backbone.
    """

    def __init__(
        self,
        *,
        output_size: PositiveInt = 14,
        spatial_scale: PositiveFloat,
        kind: Literal["align", "pool"] = "align",
        sampling_ratio: NonNegativeInt = 0,
        aligned: bool = True,
    ):
        super().__init__()
        if kind not in ("align", "pool"):
            raise ValueError(f"RoIPooler kind must be 'align' or 'pool', got {kind!r}")
        self.output_size = int(output_size)
        self.spatial_scale = float(spatial_scale)
        self.kind = kind
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def forward(self, features: Tensor, boxes: list[Tensor]) -> Tensor:
        """features (N, C, H, W); boxes: N tensors (R_i, 4) -> (sum R_i, C, S, S)."""
        # Coordinates stay fp32 even under bf16/fp16 autocast: a half-precision 800 px coordinate
        # would snap to a 4 px grid.
        rois = boxes_to_rois(boxes, torch.float32)
        if rois.shape[0] == 0:
            return features.new_zeros((0, features.shape[1], self.output_size, self.output_size))
        size = (self.output_size, self.output_size)
        x = features.float()
        if self.kind == "pool":
            out = roi_pool(x, rois, size, self.spatial_scale)
        else:
            out = roi_align(x, rois, size, self.spatial_scale, self.sampling_ratio, self.aligned)
        return out.to(features.dtype)


def boxes_to_rois(boxes: list[Tensor], dtype: torch.dtype) -> Tensor:
    """Per-image (R_i, 4) boxes -> (sum R_i, 5) rows of (batch index, x1, y1, x2, y2)."""
    rows = [
        torch.cat([b.new_full((b.shape[0], 1), float(i)), b], dim=1) for i, b in enumerate(boxes)
    ]
    return torch.cat(rows, dim=0).to(dtype)
