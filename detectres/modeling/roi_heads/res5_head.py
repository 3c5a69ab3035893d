"""The C4 RoI head: pool 14x14 from res4, run res5 per RoI, average-pool, predict.

``forward`` is the training computation (losses); ``inference`` returns detections (both from
:class:`~detectres.modeling.roi_heads.base.ROIHeads`). Shapes: N images, R RoIs, C res4 channels,
D feature size.
"""
from __future__ import annotations

from typing import Callable, Literal

from torch import Tensor, nn

from detectres.modeling.poolers import RoIPooler
from detectres.modeling.roi_heads.base import ROIHeads
from detectres.modeling.roi_heads.context import GlobalContext, concat_context
from detectres.modeling.roi_heads.predictor import FastRCNNPredictor
from detectres.modeling.roi_heads.projection import project_then_pool, projects_first, spatial_mean


class Res5ROIHeads(ROIHeads):
    """Args:
        in_channels, strides, per_roi_stage, per_roi_channels: the features in the one form every head
            gets from the detector: the map's width and its one stride, and the stage run per RoI (res5)
            with its width.
        pooler: a callable (Hydra partial) taking ``spatial_scale`` -> :class:`RoIPooler`.
        context: None, "shared" or "separate" - the paper's global context (see context.py).
        **shared: :class:`~detectres.modeling.roi_heads.base.ROIHeads`' arguments (classes, sampling,
            what detections keep).
    """

    def __init__(self, *, in_channels: int, strides: list[int], per_roi_stage: nn.Module | None,
                 per_roi_channels: int | None, pooler: Callable[..., RoIPooler],
                 context: Literal["shared", "separate"] | None = None, **shared):
        super().__init__(**shared)
        if per_roi_stage is None or len(strides) != 1:
            raise ValueError("the C4 head (Res5ROIHeads) needs a backbone with a stage to run per RoI and one "
                             f"feature map (got {len(strides)} map(s) and "
                             f"{'a' if per_roi_stage is not None else 'no'} per-RoI stage): use the FPN head "
                             "(FPNROIHeads) for a pyramid")
        if context not in (None, "shared", "separate"):
            raise ValueError(f"context must be null, 'shared' or 'separate', got {context!r}")
        self.pooler = pooler(spatial_scale=1.0 / strides[0])
        self.res5 = per_roi_stage
        self.context = GlobalContext(per_roi_stage, shared=context == "shared") if context else None
        feature_dim = per_roi_channels * (2 if context else 1)
        self.box_predictor = FastRCNNPredictor(in_channels=feature_dim, num_classes=self.num_classes)

    @property
    def roi_extent(self) -> float:
        """The side, in input pixels, of the region one pooled RoI covers at its native scale
        (14 x 16 = 224 for the paper's R-C4)."""
        return self.pooler.output_size / self.pooler.spatial_scale

    @property
    def weight_aliases(self) -> dict[str, str]:
        """State-dict prefixes filled from others when a weight file lacks them: a separate context
        branch starts from the same pretrained res5 as the RoI branch."""
        return {"context.res5.": "res5."} if self.context is not None and not self.context.shared else {}

    # -- scoring boxes --------------------------------------------------------------------------
    def run_res5(self, features: Tensor, boxes: list[Tensor], res5: nn.Module) -> Tensor:
        """Pool ``boxes`` (N lists) from (N, C, H, W) features, run ``res5``, average: (R, D)."""
        if projects_first(res5[0], self.pooler, features, sum(len(b) for b in boxes)):
            return spatial_mean(res5[1:](project_then_pool(res5[0], self.pooler, features, boxes)))
        pooled = self.pooler(features, boxes).contiguous(memory_format=self.memory_format)
        return spatial_mean(res5(pooled))

    def box_features(self, features: Tensor, boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        """(R, D) pooled res5 features ((R, 2D) with global context) for N lists of boxes."""
        x = self.run_res5(features, boxes, self.res5)
        if self.context is None:
            return x
        g = self.context(features, image_sizes, lambda b, res5: self.run_res5(features, b, res5), self.res5)
        return concat_context(x, g, boxes)
