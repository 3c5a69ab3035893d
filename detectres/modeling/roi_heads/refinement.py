"""Iterative box refinement (He et al., COCO 2015) on top of the RoI heads' detections method.

Shapes: R boxes scored, K classes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from detectres.modeling.postprocessing import flatten_class_matrix

if TYPE_CHECKING:
    from detectres.modeling.roi_heads.res5_head import Res5ROIHeads


def refine_detections(heads: "Res5ROIHeads", score_boxes: Callable[[Tensor], tuple[Tensor, Tensor]], logits: Tensor,
                      deltas: Tensor, proposals: Tensor, image_hw: tuple[int, int], *, nms_thresh: float,
                      vote_thresh: float | None) -> dict[str, Tensor]:
    """The paper's iterative localisation for one image.

    1. Each proposal's box of its highest-scoring class is re-pooled and scored and regressed again
       (``score_boxes(boxes) -> logits, deltas``, the same head), for that class.
    2. The refined predictions are unioned with the original ones (per class).
    3. NMS at ``nms_thresh`` (0.3), then box voting at IoU ``vote_thresh`` (0.5) over the union, with
       the heads' score threshold and detections per image.
    """
    s1, b1 = heads.class_boxes(logits, deltas, proposals, image_hw)
    top = s1.argmax(dim=1)
    best = b1[torch.arange(len(b1), device=b1.device), top]
    s2, b2 = heads.class_boxes(*score_boxes(best), best, image_hw)
    # each re-pooled box was regressed for its top class: it re-scores that class only
    s2 = s2 * F.one_hot(top, s1.shape[1]).to(s2.dtype)
    boxes, scores, classes = flatten_class_matrix(torch.cat([s1, s2]), torch.cat([b1, b2]))
    return heads.merge_detections(boxes, scores, classes, nms_thresh=nms_thresh, vote_thresh=vote_thresh)
