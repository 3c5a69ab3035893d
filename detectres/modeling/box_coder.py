"""Box coding: proposals + deltas <-> target boxes (the R-CNN parameterisation).

Shapes: R boxes; deltas are (R, 4 * k) for k boxes per row (class-specific regression).
Widths are x2 - x1 (no +1), as in Detectron2.
"""
from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import Tensor

from detectres.config.constraints import Length, PositiveFloat

# Limit on dw/dh so exp() cannot overflow: boxes grow at most 1000/16 times per decode.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode (dx, dy, dw, dh) of targets relative to reference boxes, scaled by ``weights``."""

    def __init__(self, *, weights: Annotated[list[PositiveFloat], Length(4)],
                 scale_clamp: PositiveFloat = DEFAULT_SCALE_CLAMP):
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, src: Tensor, target: Tensor) -> Tensor:
        """Deltas (R, 4) that take ``src`` (R, 4) boxes to ``target`` (R, 4) boxes."""
        wx, wy, ww, wh = self.weights
        src_w = src[:, 2] - src[:, 0]
        src_h = src[:, 3] - src[:, 1]
        src_cx = src[:, 0] + 0.5 * src_w
        src_cy = src[:, 1] + 0.5 * src_h
        tgt_w = target[:, 2] - target[:, 0]
        tgt_h = target[:, 3] - target[:, 1]
        tgt_cx = target[:, 0] + 0.5 * tgt_w
        tgt_cy = target[:, 1] + 0.5 * tgt_h
        return torch.stack(
            [
                wx * (tgt_cx - src_cx) / src_w,
                wy * (tgt_cy - src_cy) / src_h,
                ww * torch.log(tgt_w / src_w),
                wh * torch.log(tgt_h / src_h),
            ],
            dim=1,
        )

    def decode(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Apply (R, 4k) ``deltas`` to (R, 4) ``boxes``; returns (R, 4k) boxes."""
        deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)
        widths = (boxes[:, 2] - boxes[:, 0]).unsqueeze(1)
        heights = (boxes[:, 3] - boxes[:, 1]).unsqueeze(1)
        ctr_x = boxes[:, 0].unsqueeze(1) + 0.5 * widths
        ctr_y = boxes[:, 1].unsqueeze(1) + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.scale_clamp)
        pred_cx = dx * widths + ctr_x
        pred_cy = dy * heights + ctr_y
        pred_w = torch.exp(dw) * widths
        pred_h = torch.exp(dh) * heights
        out = torch.stack(
            [pred_cx - 0.5 * pred_w, pred_cy - 0.5 * pred_h, pred_cx + 0.5 * pred_w, pred_cy + 0.5 * pred_h],
            dim=2,
        )
        return out.reshape(deltas.shape)
