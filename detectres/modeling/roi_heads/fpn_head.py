"""The FPN RoI head (Detectron2's StandardROIHeads with FastRCNNConvFCHead): each RoI is pooled 7x7 from
the pyramid level that suits its size (P2..P5), flattened, and run through fully connected layers (two of
1024 by default) before the same predictor, losses and inference as the C4 head (base.py).

Shapes: R RoIs, C pyramid channels, S pooled side, D fc width.
"""
from __future__ import annotations

from typing import Annotated, Callable

import torch.nn.functional as F
from torch import Tensor, nn

from detectres.config.constraints import Channels, Fraction, NonNegativeFloat, PerImage, Range, SampleCap
from detectres.modeling.box_coder import BoxCoder
from detectres.modeling.features import feature_levels
from detectres.modeling.matcher import Matcher
from detectres.modeling.poolers import MultiLevelRoIPooler
from detectres.modeling.roi_heads.base import ROIHeads
from detectres.modeling.roi_heads.predictor import FastRCNNPredictor


class FCHead(nn.Module):
    """(R, C, S, S) pooled features -> flattened -> ``num_fc`` x (Linear ``fc_dim`` + ReLU) -> (R, D).
    Layers are named ``fc1``, ``fc2``, ... as in Detectron2; initialised as Caffe2's XavierFill."""

    def __init__(self, *, in_features: int, num_fc: Annotated[int, Range(0, 16)] = 2, fc_dim: Channels = 1024):
        super().__init__()
        self.out_features = in_features
        for i in range(num_fc):
            layer = nn.Linear(self.out_features, fc_dim)
            nn.init.kaiming_uniform_(layer.weight, a=1)
            nn.init.zeros_(layer.bias)
            self.add_module(f"fc{i + 1}", layer)
            self.out_features = fc_dim
        self.num_fc = num_fc

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for i in range(self.num_fc):
            x = F.relu(getattr(self, f"fc{i + 1}")(x))
        return x


class FPNROIHeads(ROIHeads):
    """Args:
        in_channels, strides: the pyramid's width and the strides of the levels RoIs are pooled from
            (P2..P5; given by the detector from its backbone).
        pooler: a callable (Hydra partial) taking ``strides`` -> :class:`MultiLevelRoIPooler`.
        box_head: a callable taking ``in_features`` -> :class:`FCHead`.
        context: must stay null: the paper's global context pools a whole-image box through res5, which
            only the C4 head runs per RoI (the key is here to say so when set).
        the rest: as :class:`~detectres.modeling.roi_heads.res5_head.Res5ROIHeads`.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        strides: list[int],
        num_classes: int,
        pooler: Callable[..., MultiLevelRoIPooler],
        box_head: Callable[..., FCHead],
        matcher: Matcher,
        box_coder: BoxCoder,
        batch_size_per_image: SampleCap = 512,
        positive_fraction: Fraction = 0.25,
        proposal_append_gt: bool = True,
        score_thresh: Fraction = 0.05,
        nms_thresh: Fraction = 0.5,
        detections_per_image: PerImage = 100,
        smooth_l1_beta: NonNegativeFloat = 0.0,
        context: str | None = None,
    ):
        self.check_args(context=context)
        super().__init__(num_classes=num_classes, matcher=matcher, box_coder=box_coder,
                         batch_size_per_image=batch_size_per_image, positive_fraction=positive_fraction,
                         proposal_append_gt=proposal_append_gt, score_thresh=score_thresh, nms_thresh=nms_thresh,
                         detections_per_image=detections_per_image, smooth_l1_beta=smooth_l1_beta)
        self.pooler = pooler(strides=list(strides))
        self.box_head = box_head(in_features=in_channels * self.pooler.output_size ** 2)
        self.box_predictor = FastRCNNPredictor(in_channels=self.box_head.out_features, num_classes=num_classes)

    @staticmethod
    def check_args(*, context: str | None = None, **_) -> None:
        if context is not None:
            raise ValueError(f"context={context!r}: the paper's global context is a C4 construct (a whole-image "
                             "box pooled and run through res5 beside each RoI); the FPN head has no res5 to run it "
                             "through. Use a C4 model (model=r50_c4 or r101_c4) for it")

    def box_features(self, features: Tensor | list[Tensor], boxes: list[Tensor],
                     image_sizes: list[tuple[int, int]]) -> Tensor:
        """(R, D) fc features of N lists of boxes, each pooled from its level of ``features`` (P2..P5[, P6])."""
        levels = feature_levels(features)[: len(self.pooler.levels)]
        return self.box_head(self.pooler(levels, boxes))
