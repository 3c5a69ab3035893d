"""Class scores and class-specific box deltas for pooled RoI features, with losses and inference.

Layout follows Detectron2: K+1 logits with background LAST (index K), and K * 4 deltas (no
background box). Shapes: R RoIs, D feature size, K foreground classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from detectres.modeling.box_coder import BoxCoder
from detectres.modeling.rpn import smooth_l1
from detectres.structures.boxes import clip_boxes, nonempty_mask


class FastRCNNPredictor(nn.Module):
    def __init__(self, *, in_channels: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(in_channels, num_classes + 1)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.cls_score.bias, 0.0)
        nn.init.constant_(self.bbox_pred.bias, 0.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (R, D) -> logits (R, K+1), deltas (R, K*4)."""
        return self.cls_score(x), self.bbox_pred(x)


def fast_rcnn_losses(
    logits: Tensor,
    deltas: Tensor,
    proposals: Tensor,
    gt_classes: Tensor,
    gt_boxes: Tensor,
    box_coder: BoxCoder,
    smooth_l1_beta: float = 0.0,
) -> dict[str, Tensor]:
    """Cross-entropy over sampled RoIs (mean) and L1 on the ground-truth class's deltas of
    foreground RoIs, summed and divided by the number of sampled RoIs.

    Args: logits (R, K+1), deltas (R, K*4), proposals (R, 4), gt_classes (R,) in 0..K
    (K = background), gt_boxes (R, 4).
    """
    num_classes = logits.shape[1] - 1
    loss_cls = F.cross_entropy(logits, gt_classes, reduction="mean") if logits.numel() else logits.sum() * 0.0
    fg = torch.nonzero((gt_classes >= 0) & (gt_classes < num_classes), as_tuple=True)[0]
    if fg.numel() == 0:
        return {"loss_cls": loss_cls, "loss_box_reg": deltas.sum() * 0.0}
    cls = gt_classes[fg]
    pred = deltas.view(deltas.shape[0], num_classes, 4)[fg, cls]
    target = box_coder.encode(proposals[fg], gt_boxes[fg])
    loss_box = smooth_l1(pred, target, smooth_l1_beta) / max(1, gt_classes.numel())
    return {"loss_cls": loss_cls, "loss_box_reg": loss_box}


def fast_rcnn_inference(
    logits: Tensor,
    deltas: Tensor,
    proposals: Tensor,
    image_hw: tuple[int, int],
    box_coder: BoxCoder,
    *,
    score_thresh: float,
    nms_thresh: float,
    detections_per_image: int,
) -> dict[str, Tensor]:
    """Detections for one image: softmax, per-class decode and clip, score > thresh, per-class
    NMS, top ``detections_per_image``. Returns ``pred_boxes`` (D, 4), ``scores`` (D,),
    ``pred_classes`` (D,) in the network input's pixels."""
    num_classes = logits.shape[1] - 1
    scores = F.softmax(logits.float(), dim=1)[:, :-1]
    boxes = box_coder.decode(deltas, proposals).view(-1, num_classes, 4)
    valid = torch.isfinite(boxes).all(dim=2).all(dim=1) & torch.isfinite(scores).all(dim=1)
    boxes, scores = boxes[valid], scores[valid]
    boxes = clip_boxes(boxes.reshape(-1, 4), image_hw).view(-1, num_classes, 4)
    keep = scores > score_thresh
    roi_idx, cls_idx = keep.nonzero(as_tuple=True)
    boxes, scores = boxes[roi_idx, cls_idx], scores[roi_idx, cls_idx]
    keep = batched_nms(boxes, scores, cls_idx, nms_thresh)[:detections_per_image]
    return {"pred_boxes": boxes[keep], "scores": scores[keep], "pred_classes": cls_idx[keep]}


def nonempty_detections(result: dict[str, Tensor]) -> dict[str, Tensor]:
    keep = nonempty_mask(result["pred_boxes"])
    return {k: v[keep] for k, v in result.items()}
