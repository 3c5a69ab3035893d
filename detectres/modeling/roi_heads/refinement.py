"""Iterative box refinement and box voting (He et al., COCO 2015), as pure tensor functions.

Shapes: R boxes scored, K classes, M candidate detections.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms

from detectres.modeling.box_coder import BoxCoder
from detectres.structures.boxes import clip_boxes, pairwise_iou


def class_scores_and_boxes(logits: Tensor, deltas: Tensor, boxes: Tensor, image_hw: tuple[int, int],
                           box_coder: BoxCoder) -> tuple[Tensor, Tensor]:
    """Softmax scores without background (R, K) and clipped class-specific boxes (R, K, 4)."""
    scores = F.softmax(logits.float(), dim=1)[:, :-1]
    k = scores.shape[1]
    decoded = box_coder.decode(deltas, boxes).view(-1, k, 4)
    return scores, clip_boxes(decoded.reshape(-1, 4), image_hw).view(-1, k, 4)


def box_voting(kept_boxes: Tensor, kept_classes: Tensor, pool_boxes: Tensor, pool_scores: Tensor,
               pool_classes: Tensor, iou_thresh: float) -> Tensor:
    """Each kept box becomes the score-weighted mean of the pool boxes of its class that overlap it
    at IoU >= ``iou_thresh`` (the kept box is in the pool, so it always votes for itself)."""
    if kept_boxes.numel() == 0:
        return kept_boxes
    iou = pairwise_iou(kept_boxes, pool_boxes)
    weights = ((iou >= iou_thresh) & (kept_classes[:, None] == pool_classes[None, :])).float() * pool_scores[None]
    total = weights.sum(dim=1, keepdim=True)
    voted = weights @ pool_boxes / total.clamp(min=1e-12)
    return torch.where(total > 0, voted, kept_boxes)


def merge_detections(boxes: Tensor, scores: Tensor, classes: Tensor, *, score_thresh: float, nms_thresh: float,
                     vote_thresh: float | None, max_detections: int) -> dict[str, Tensor]:
    """Flat candidates (M, 4), (M,), (M,) -> score > thresh, per-class NMS, top-k, optional voting."""
    keep = scores > score_thresh
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    kept = batched_nms(boxes, scores, classes, nms_thresh)[:max_detections]
    out_boxes = boxes[kept]
    if vote_thresh is not None:
        out_boxes = box_voting(out_boxes, classes[kept], boxes, scores, classes, vote_thresh)
    return {"pred_boxes": out_boxes, "scores": scores[kept], "pred_classes": classes[kept]}


def flatten_class_matrix(scores: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(R, K) scores and (R, K, 4) boxes -> flat (R*K, 4) boxes, (R*K,) scores, (R*K,) classes."""
    k = scores.shape[1]
    classes = torch.arange(k, device=scores.device).repeat(scores.shape[0])
    return boxes.reshape(-1, 4), scores.reshape(-1), classes


def refine_detections(score_boxes: Callable[[Tensor], tuple[Tensor, Tensor]], logits: Tensor, deltas: Tensor,
                      proposals: Tensor, image_hw: tuple[int, int], box_coder: BoxCoder, *, score_thresh: float,
                      nms_thresh: float = 0.3, vote_thresh: float | None = 0.5,
                      max_detections: int = 100) -> dict[str, Tensor]:
    """The paper's iterative localisation for one image.

    1. Each proposal's box of its highest-scoring class is re-pooled and scored and regressed again
       (``score_boxes(boxes) -> logits, deltas``, the same head), for that class.
    2. The refined predictions are unioned with the original ones (per class).
    3. NMS at ``nms_thresh`` (0.3), then box voting at IoU ``vote_thresh`` (0.5) over the union.
    """
    s1, b1 = class_scores_and_boxes(logits, deltas, proposals, image_hw, box_coder)
    best = b1[torch.arange(len(b1), device=b1.device), s1.argmax(dim=1)]
    logits2, deltas2 = score_boxes(best)
    s2, b2 = class_scores_and_boxes(logits2, deltas2, best, image_hw, box_coder)
    # each re-pooled box was regressed for its top class: it re-scores that class only
    s2 = s2 * F.one_hot(s1.argmax(dim=1), s1.shape[1]).to(s2.dtype)
    boxes, scores, classes = flatten_class_matrix(torch.cat([s1, s2]), torch.cat([b1, b2]))
    return merge_detections(boxes, scores, classes, score_thresh=score_thresh, nms_thresh=nms_thresh,
                            vote_thresh=vote_thresh, max_detections=max_detections)
