"""RoI feature extraction from one feature map: RoIAlign (aligned, as ROIAlignV2) or RoIPool."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align, roi_pool

from detectres.config.schema import NonNegativeInt, PositiveFloat, PositiveInt
from detectres.modeling.roi_align import roi_align_gather


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

    def forward(self, features: Tensor, boxes: list[Tensor], stride: int = 1) -> Tensor:
        """features (N, C, H, W); boxes: N tensors (R_i, 4) -> (sum R_i, C, S, S); with ``stride`` only
        every ``stride``-th bin per side (what a strided 1x1 convolution after the pooler reads).

        RoIAlign on a CPU without gradients runs as one channels-last gather (:mod:`roi_align`, the same
        numbers, several times faster); training and GPUs use torchvision's kernels.
        """
        # Coordinates stay fp32 even under bf16/fp16 autocast: a half-precision 800 px coordinate
        # would snap to a 4 px grid.
        rois = boxes_to_rois(boxes, torch.float32)
        if rois.shape[0] == 0:
            side = len(range(0, self.output_size, stride))
            return features.new_zeros((0, features.shape[1], side, side))
        if self.kind == "align" and self.gathers(features):
            return roi_align_gather(features, rois, output_size=self.output_size, spatial_scale=self.spatial_scale,
                                    sampling_ratio=self.sampling_ratio, aligned=self.aligned, stride=stride)
        size = (self.output_size, self.output_size)
        x = features.float()
        if self.kind == "pool":
            out = roi_pool(x, rois, size, self.spatial_scale)
        else:
            out = roi_align(x, rois, size, self.spatial_scale, self.sampling_ratio, self.aligned)
        return out[:, :, ::stride, ::stride].to(features.dtype)

    @staticmethod
    def gathers(features: Tensor) -> bool:
        """Whether the gather form runs: on a CPU, when no gradient has to flow back to ``features`` and
        the model is not being traced for export (torchvision's RoIAlign has an ONNX form)."""
        return (features.device.type == "cpu" and not (torch.is_grad_enabled() and features.requires_grad)
                and not torch.jit.is_tracing())


def boxes_to_rois(boxes: list[Tensor], dtype: torch.dtype) -> Tensor:
    """Per-image (R_i, 4) boxes -> (sum R_i, 5) rows of (batch index, x1, y1, x2, y2)."""
    rows = [
        torch.cat([b.new_full((b.shape[0], 1), float(i)), b], dim=1) for i, b in enumerate(boxes)
    ]
    return torch.cat(rows, dim=0).to(dtype)
