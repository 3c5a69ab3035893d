"""The FPN RoI head (Detectron2's StandardROIHeads with FastRCNNConvFCHead): each RoI is pooled 7x7 from
the pyramid level that suits its size (P2..P5), flattened, and run through fully connected layers (two of
1024 by default) before the same predictor, losses and inference as the C4 head (base.py).

Shapes: R RoIs, C pyramid channels, S pooled side, D fc width.
"""
from __future__ import annotations

from typing import Annotated, Callable

import torch.nn.functional as F
from torch import Tensor, nn

from detectres.config.constraints import Channels, Range
from detectres.modeling.features import feature_levels
from detectres.modeling.poolers import MultiLevelRoIPooler
from detectres.modeling.roi_heads.base import ROIHeads
from detectres.modeling.roi_heads.predictor import FastRCNNPredictor


class FCHead(nn.Module):
    """(R, C, S, S) pooled features -> flattened -> ``num_fc`` x (Linear ``fc_dim`` + ReLU) -> (R, D).
    Layers are named ``fc1``, ``fc2``, ... as in Detectron2; initialised as Caffe2's XavierFill."""

    starts_untrained = True  # an ImageNet backbone file has none of it (see weights/loading.py)

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
            (P2..P5; given by the detector from its backbone, with ``per_roi_stage``/``per_roi_channels``,
            which must be None here).
        pooler: a callable (Hydra partial) taking ``strides`` -> :class:`MultiLevelRoIPooler`.
        box_head: a callable taking ``in_features`` -> :class:`FCHead`.
        context: must stay null: the paper's global context pools a whole-image box through res5, which
            only the C4 head runs per RoI (the key is here to say so when set).
        **shared: :class:`~detectres.modeling.roi_heads.base.ROIHeads`' arguments.
    """

    def __init__(self, *, in_channels: int, strides: list[int], pooler: Callable[..., MultiLevelRoIPooler],
                 box_head: Callable[..., FCHead], per_roi_stage: nn.Module | None = None,
                 per_roi_channels: int | None = None, context: str | None = None, **shared):
        self.check_args(context=context)
        super().__init__(**shared)
        if per_roi_stage is not None:
            raise ValueError("the FPN head pools each RoI from the maps and runs its own fc head; this backbone has a "
                             "stage to run per RoI (C4): use the C4 head (Res5ROIHeads) with it")
        self.pooler = pooler(strides=list(strides))
        self.box_head = box_head(in_features=in_channels * self.pooler.output_size ** 2)
        self.box_predictor = FastRCNNPredictor(in_channels=self.box_head.out_features, num_classes=self.num_classes)

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
