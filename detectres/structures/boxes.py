"""Pure box math on XYXY tensors (x1, y1, x2, y2 in pixels, no +1 convention).

Shapes: N, M boxes.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou


def box_area(boxes: Tensor) -> Tensor:
    """Area of (N, 4) boxes; degenerate boxes give 0, never a negative number."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
    return wh[:, 0] * wh[:, 1]


def pairwise_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """(N, M) IoU between (N, 4) and (M, 4) boxes (torchvision.ops.box_iou).

    Zero-area pairs give 0 instead of NaN so matchers can treat them as background.
    """
    if boxes1.numel() == 0 or boxes2.numel() == 0:
        return boxes1.new_zeros((boxes1.shape[0], boxes2.shape[0]))
    return torch.nan_to_num(box_iou(boxes1, boxes2), nan=0.0)


def clip_boxes(boxes: Tensor, image_hw: tuple[int, int] | Tensor) -> Tensor:
    """Clip (N, 4) boxes to an image of height h and width w: ``image_hw`` is ``(h, w)``, or an (N, 2)
    tensor with each box's own image size (boxes of several images at once)."""
    if isinstance(image_hw, Tensor):
        h, w = image_hw.to(boxes.dtype).unbind(dim=1)
        return torch.minimum(boxes.clamp(min=0), torch.stack([w, h, w, h], dim=1))
    h, w = image_hw
    x1 = boxes[:, 0].clamp(min=0, max=w)
    y1 = boxes[:, 1].clamp(min=0, max=h)
    x2 = boxes[:, 2].clamp(min=0, max=w)
    y2 = boxes[:, 3].clamp(min=0, max=h)
    return torch.stack([x1, y1, x2, y2], dim=1)


def nonempty_mask(boxes: Tensor, min_size: float = 0.0) -> Tensor:
    """(N,) bool: width and height both strictly above ``min_size``."""
    wh = boxes[:, 2:] - boxes[:, :2]
    return (wh[:, 0] > min_size) & (wh[:, 1] > min_size)


def scale_boxes(boxes: Tensor, scale_xy: tuple[float, float]) -> Tensor:
    """Multiply x coordinates by ``scale_xy[0]`` and y coordinates by ``scale_xy[1]``."""
    sx, sy = scale_xy
    return boxes * boxes.new_tensor([sx, sy, sx, sy])
