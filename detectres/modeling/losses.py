"""Every loss of the detector, with the toolkit's names: ``loss_rpn_cls``, ``loss_rpn_loc`` (RPN) and
``loss_cls``, ``loss_box_reg`` (Fast R-CNN head), normalised as Detectron2 does.

Shapes: N images, P anchors per image, R sampled RoIs, K foreground classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detectres.modeling.box_coder import BoxCoder


def smooth_l1(pred: Tensor, target: Tensor, beta: float) -> Tensor:
    """Summed smooth-L1; beta 0 is plain L1 (Detectron2's default)."""
    if beta < 1e-5:
        return (pred - target).abs().sum()
    return F.smooth_l1_loss(pred, target, beta=beta, reduction="sum")


def rpn_losses(logits: Tensor, deltas: Tensor, labels: Tensor, matched_gt: Tensor, anchors: Tensor,
               box_coder: BoxCoder, *, normalizer: float, smooth_l1_beta: float = 0.0, loss_weight: float = 1.0,
               box_reg_loss_weight: float = 1.0) -> dict[str, Tensor]:
    """Objectness BCE over the sampled anchors and box L1 over the positive ones, both divided by
    ``normalizer`` (sampled anchors per image x images).

    Args:
        logits (N, P), deltas (N, P, 4): the RPN head's outputs.
        labels (N, P): 1 positive, 0 negative, -1 not sampled.
        matched_gt (N, P, 4): the ground-truth box matched to each anchor.
        anchors (P, 4).
    """
    pos_mask = labels == 1
    valid = labels >= 0
    loss_cls = F.binary_cross_entropy_with_logits(logits[valid], labels[valid], reduction="sum")
    if pos_mask.any():
        target = box_coder.encode(anchors.expand(labels.shape[0], -1, -1)[pos_mask], matched_gt[pos_mask])
        loss_loc = smooth_l1(deltas[pos_mask], target, smooth_l1_beta)
    else:
        loss_loc = deltas.sum() * 0.0
    return {
        "loss_rpn_cls": loss_cls / normalizer * loss_weight,
        "loss_rpn_loc": loss_loc / normalizer * loss_weight * box_reg_loss_weight,
    }


def fast_rcnn_losses(logits: Tensor, deltas: Tensor, proposals: Tensor, gt_classes: Tensor, gt_boxes: Tensor,
                     box_coder: BoxCoder, smooth_l1_beta: float = 0.0) -> dict[str, Tensor]:
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
