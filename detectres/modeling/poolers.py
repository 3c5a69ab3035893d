"""RoI feature extraction: RoIAlign (aligned, as ROIAlignV2) or RoIPool from one feature map (C4), or
from the pyramid level that suits each box (FPN)."""
from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align, roi_pool

from detectres.config.constraints import GridSize, PositiveFloat, Range
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
        output_size: GridSize = 14,
        spatial_scale: PositiveFloat,
        kind: Literal["align", "pool"] = "align",
        sampling_ratio: Annotated[int, Range(0, 64)] = 0,
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

        RoIAlign on a CPU runs as one channels-last gather (:mod:`roi_align`: the same numbers, and with
        autograd through it the same gradients, several times faster both ways: torchvision's CPU kernels
        run on one thread); GPUs and tracing for export use torchvision's kernels.
        """
        # Coordinates stay fp32 even under bf16/fp16 autocast: a half-precision 800 px coordinate
        # would snap to a 4 px grid.
        return self.pool_rois(features, boxes_to_rois(boxes, torch.float32), stride)

    def pool_rois(self, features: Tensor, rois: Tensor, stride: int = 1) -> Tensor:
        """:meth:`forward` for (R, 5) rows of (batch index, x1, y1, x2, y2) in fp32."""
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
        """Whether the gather form runs: on a CPU, unless the model is being traced for export
        (torchvision's RoIAlign has an ONNX form)."""
        return features.device.type == "cpu" and not torch.jit.is_tracing()


def boxes_to_rois(boxes: list[Tensor], dtype: torch.dtype) -> Tensor:
    """Per-image (R_i, 4) boxes -> (sum R_i, 5) rows of (batch index, x1, y1, x2, y2)."""
    rows = [
        torch.cat([b.new_full((b.shape[0], 1), float(i)), b], dim=1) for i, b in enumerate(boxes)
    ]
    return torch.cat(rows, dim=0).to(dtype)


def assign_pyramid_levels(boxes: Tensor, *, min_level: int, max_level: int, canonical_box_size: float,
                          canonical_level: int) -> Tensor:
    """(R, 4) boxes -> (R,) pyramid level index in 0..max_level-min_level (FPN paper eq. 1, Detectron2's
    form): ``floor(canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8))`` clamped to the levels."""
    sizes = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_box_size + 1e-8))
    return levels.clamp(min=min_level, max=max_level).to(torch.int64) - min_level


class MultiLevelRoIPooler(nn.Module):
    """Pool each box from the pyramid level that suits its size (see :func:`assign_pyramid_levels`), with
    one :class:`RoIPooler` per level (``spatial_scale`` = 1 / its stride). ``strides`` of the levels are
    given by the RoI heads from the backbone; boxes of 224 x 224 input pixels go to stride 16 (P4).
    """

    def __init__(self, *, strides: list[int], output_size: GridSize = 7, kind: Literal["align", "pool"] = "align",
                 sampling_ratio: Annotated[int, Range(0, 64)] = 0, aligned: bool = True,
                 canonical_box_size: Annotated[float, Range(0, 8192, lo_open=True)] = 224.0,
                 canonical_level: Annotated[int, Range(1, 16)] = 4):
        super().__init__()
        levels = [int(s).bit_length() - 1 for s in strides]
        if any(2 ** lv != s for lv, s in zip(levels, strides)) or levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"pyramid strides must be consecutive powers of two, got {list(strides)}")
        self.levels = nn.ModuleList(RoIPooler(output_size=output_size, spatial_scale=1.0 / s, kind=kind,
                                              sampling_ratio=sampling_ratio, aligned=aligned) for s in strides)
        self.level_range = (levels[0], levels[-1])
        self.canonical = (float(canonical_box_size), int(canonical_level))
        self.output_size = int(output_size)

    def forward(self, features: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """features: one (N, C, H_l, W_l) map per level; boxes: N tensors (R_i, 4) -> (sum R_i, C, S, S)."""
        rois = boxes_to_rois(boxes, torch.float32)
        if len(self.levels) == 1:
            return self.levels[0].pool_rois(features[0], rois)
        level = assign_pyramid_levels(rois[:, 1:], min_level=self.level_range[0], max_level=self.level_range[1],
                                      canonical_box_size=self.canonical[0], canonical_level=self.canonical[1])
        n, c = rois.shape[0], features[0].shape[1]
        out = features[0].new_zeros((n, c, self.output_size, self.output_size))
        for index, (pooler, x) in enumerate(zip(self.levels, features)):
            rows = (level == index).nonzero().squeeze(1)
            out[rows] = pooler.pool_rois(x, rois[rows]).to(out.dtype)
        return out
