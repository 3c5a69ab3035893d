"""Region Proposal Network: head, proposal generation and losses (one feature map, C4 layout).

Shapes: N images, A anchors per location, H x W feature map, P = H * W * A anchors per image,
G ground-truth boxes in an image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import nms

from detectres.modeling.anchors import AnchorGenerator
from detectres.modeling.box_coder import BoxCoder
from detectres.modeling.matcher import Matcher
from detectres.modeling.sampling import subsample_labels
from detectres.structures.boxes import clip_boxes, nonempty_mask, pairwise_iou


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 convs to A objectness logits and A x 4 box deltas per location."""

    def __init__(self, *, in_channels: int, num_anchors: int, conv_channels: int | None = None):
        super().__init__()
        conv_channels = conv_channels or in_channels
        self.conv = nn.Conv2d(in_channels, conv_channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(conv_channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(conv_channels, num_anchors * 4, 1)
        for layer in (self.conv, self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0.0)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """features (N, C, H, W) -> logits (N, A, H, W), deltas (N, A * 4, H, W)."""
        t = F.relu(self.conv(features))
        return self.objectness_logits(t), self.anchor_deltas(t)


def flatten_rpn_outputs(logits: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor]:
    """(N, A, H, W), (N, A*4, H, W) -> (N, P), (N, P, 4) in the anchors' (y, x, a) order."""
    n, a, h, w = logits.shape
    logits = logits.permute(0, 2, 3, 1).reshape(n, -1)
    deltas = deltas.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
    return logits, deltas


class RPN(nn.Module):
    """Proposals from anchors; training also returns ``loss_rpn_cls`` and ``loss_rpn_loc``."""

    def __init__(
        self,
        *,
        in_channels: int,
        anchor_generator: AnchorGenerator,
        matcher: Matcher,
        box_coder: BoxCoder,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_topk_train: int = 12000,
        post_nms_topk_train: int = 2000,
        pre_nms_topk_test: int = 6000,
        post_nms_topk_test: int = 300,
        nms_thresh: float = 0.7,
        min_box_size: float = 0.0,
        loss_weight: float = 1.0,
        box_reg_loss_weight: float = 1.0,
        smooth_l1_beta: float = 0.0,
        head_channels: int | None = None,
    ):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = RPNHead(in_channels=in_channels, num_anchors=anchor_generator.num_anchors,
                            conv_channels=head_channels)
        self.matcher = matcher
        self.box_coder = box_coder
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.pre_nms_topk = {True: pre_nms_topk_train, False: pre_nms_topk_test}
        self.post_nms_topk = {True: post_nms_topk_train, False: post_nms_topk_test}
        self.nms_thresh = nms_thresh
        self.min_box_size = min_box_size
        self.loss_weight = loss_weight
        self.box_reg_loss_weight = box_reg_loss_weight
        self.smooth_l1_beta = smooth_l1_beta

    def forward(
        self, features: Tensor, image_sizes: list[tuple[int, int]], targets: list[dict] | None = None
    ) -> tuple[list[Tensor], list[Tensor], dict[str, Tensor]]:
        """Returns per-image proposals (R_i, 4), their logits (R_i,), and losses (training only)."""
        anchors = self.anchor_generator(features.shape[-2:])
        logits, deltas = flatten_rpn_outputs(*self.head(features))
        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("RPN in training mode needs targets")
            losses = self.losses(anchors, logits, deltas, targets)
        with torch.no_grad():
            boxes, scores = self.select_proposals(anchors, logits.detach(), deltas.detach(), image_sizes)
        return boxes, scores, losses

    @torch.no_grad()
    def select_proposals(
        self, anchors: Tensor, logits: Tensor, deltas: Tensor, image_sizes: list[tuple[int, int]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: top-k by logit -> decode -> clip -> drop empty -> NMS -> top-k (sorted by logit)."""
        pre_k = min(self.pre_nms_topk[self.training], logits.shape[1])
        post_k = self.post_nms_topk[self.training]
        top_logits, top_idx = logits.topk(pre_k, dim=1)
        all_boxes, all_scores = [], []
        for i, hw in enumerate(image_sizes):
            boxes = self.box_coder.decode(deltas[i, top_idx[i]], anchors[top_idx[i]])
            scores = top_logits[i]
            finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
            boxes, scores = clip_boxes(boxes[finite], hw), scores[finite]
            keep = nonempty_mask(boxes, self.min_box_size)
            boxes, scores = boxes[keep], scores[keep]
            keep = nms(boxes, scores, self.nms_thresh)[:post_k]
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
        return all_boxes, all_scores

    def losses(self, anchors: Tensor, logits: Tensor, deltas: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        """Objectness BCE and box L1 on ``batch_size_per_image`` sampled anchors per image (drawn from
        the target's ``generator`` when it has one), both normalised by the number of sampled anchors
        (as Detectron2)."""
        gt_boxes = [t["gt_boxes"] for t in targets]
        labels, matched = [], []
        for gt, target in zip(gt_boxes, targets):
            matches, match_labels = self.matcher(pairwise_iou(gt, anchors))
            pos, neg = subsample_labels(match_labels, num_samples=self.batch_size_per_image,
                                        positive_fraction=self.positive_fraction, bg_label=0,
                                        generator=target.get("generator"))
            sampled = torch.full_like(match_labels, -1, dtype=torch.float32)
            sampled[pos], sampled[neg] = 1.0, 0.0
            labels.append(sampled)
            matched.append(gt[matches] if gt.numel() else torch.zeros_like(anchors))
        labels_t = torch.stack(labels)
        pos_mask = labels_t == 1
        valid = labels_t >= 0
        normalizer = self.batch_size_per_image * len(gt_boxes)
        loss_cls = F.binary_cross_entropy_with_logits(logits[valid], labels_t[valid], reduction="sum")
        if pos_mask.any():
            gt_t = torch.stack(matched)[pos_mask]
            target_deltas = self.box_coder.encode(anchors.expand(len(gt_boxes), -1, -1)[pos_mask], gt_t)
            loss_loc = smooth_l1(deltas[pos_mask], target_deltas, self.smooth_l1_beta)
        else:
            loss_loc = deltas.sum() * 0.0
        return {
            "loss_rpn_cls": loss_cls / normalizer * self.loss_weight,
            "loss_rpn_loc": loss_loc / normalizer * self.loss_weight * self.box_reg_loss_weight,
        }


def smooth_l1(pred: Tensor, target: Tensor, beta: float) -> Tensor:
    """Summed smooth-L1; beta 0 is plain L1 (Detectron2's default)."""
    if beta < 1e-5:
        return (pred - target).abs().sum()
    return F.smooth_l1_loss(pred, target, beta=beta, reduction="sum")
