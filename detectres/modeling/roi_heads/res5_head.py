"""The C4 RoI head: pool 14x14 from res4, run res5 per RoI, average-pool, predict.

Shapes: N images, R RoIs, C res4 channels, K foreground classes, G ground-truth boxes.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from detectres.modeling.box_coder import BoxCoder
from detectres.modeling.matcher import Matcher
from detectres.modeling.poolers import RoIPooler
from detectres.modeling.roi_heads.context import GlobalContext, concat_context
from detectres.modeling.roi_heads.predictor import FastRCNNPredictor, fast_rcnn_inference, fast_rcnn_losses
from detectres.modeling.sampling import subsample_labels
from detectres.structures.boxes import pairwise_iou


class Res5ROIHeads(nn.Module):
    def __init__(
        self,
        *,
        res5: nn.Module,
        out_channels: int,
        num_classes: int,
        pooler: RoIPooler,
        matcher: Matcher,
        box_coder: BoxCoder,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        proposal_append_gt: bool = True,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
        smooth_l1_beta: float = 0.0,
        context: str | None = None,
    ):
        """``context``: None, "shared" or "separate" - the paper's global context (see context.py)."""
        super().__init__()
        if context not in (None, "shared", "separate"):
            raise ValueError(f"context must be null, 'shared' or 'separate', got {context!r}")
        self.pooler = pooler
        self.res5 = res5
        self.context = GlobalContext(res5, shared=context == "shared") if context else None
        feature_dim = out_channels * (2 if context else 1)
        self.box_predictor = FastRCNNPredictor(in_channels=feature_dim, num_classes=num_classes)
        self.num_classes = num_classes
        self.matcher = matcher
        self.box_coder = box_coder
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.proposal_append_gt = proposal_append_gt
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.smooth_l1_beta = smooth_l1_beta
        self.memory_format = torch.contiguous_format  # the detector sets channels_last when it uses it

    def box_features(self, features: Tensor, boxes: list[Tensor],
                     image_sizes: list[tuple[int, int]] | None = None) -> Tensor:
        """(N, C, H, W) res4 features and N lists of boxes -> (R, D) pooled res5 features
        ((R, 2D) with global context, which needs ``image_sizes``)."""
        x = self.res5(self.pooler(features, boxes).contiguous(memory_format=self.memory_format))
        x = x.mean(dim=(2, 3))
        if self.context is None:
            return x
        if image_sizes is None:
            raise ValueError("global context needs the image sizes")
        g = self.context(features, image_sizes, self.pooler, self.res5, self.memory_format)
        return concat_context(x, g, [len(b) for b in boxes])

    def forward_with_given_boxes(self, features: Tensor, boxes: list[Tensor],
                                 image_sizes: list[tuple[int, int]] | None = None) -> tuple[Tensor, Tensor]:
        """Score and regress given boxes: logits (R, K+1), deltas (R, K*4)."""
        return self.box_predictor(self.box_features(features, boxes, image_sizes))

    def forward(
        self,
        features: Tensor,
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict] | None = None,
    ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        """Training: losses ``loss_cls``, ``loss_box_reg``. Inference: per-image detections."""
        if self.training:
            if targets is None:
                raise ValueError("Res5ROIHeads in training mode needs targets")
            return self.losses(features, proposals, targets, image_sizes)
        return self.inference(features, proposals, image_sizes)

    def losses(self, features: Tensor, proposals: list[Tensor], targets: list[dict],
               image_sizes: list[tuple[int, int]]) -> dict[str, Tensor]:
        boxes, classes, gt_boxes = self.label_and_sample(proposals, targets)
        logits, deltas = self.forward_with_given_boxes(features, boxes, image_sizes)
        return fast_rcnn_losses(logits, deltas, torch.cat(boxes), torch.cat(classes), torch.cat(gt_boxes),
                                self.box_coder, self.smooth_l1_beta)

    @torch.no_grad()
    def label_and_sample(
        self, proposals: list[Tensor], targets: list[dict]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per image: append ground truth, match at IoU 0.5, sample ``batch_size_per_image`` RoIs
        with at most ``positive_fraction`` foreground. Returns boxes, classes (K = background) and
        matched ground-truth boxes."""
        out_boxes, out_classes, out_gt = [], [], []
        for props, target in zip(proposals, targets):
            gt, gt_cls = target["gt_boxes"], target["gt_classes"]
            if self.proposal_append_gt:
                props = torch.cat([props, gt.to(props.dtype)])
            matches, labels = self.matcher(pairwise_iou(gt, props))
            if gt.numel():
                classes = gt_cls[matches].clone()
                matched_gt = gt[matches]
            else:
                classes = torch.zeros_like(matches)
                matched_gt = torch.zeros_like(props)
            classes[labels == 0] = self.num_classes
            classes[labels == -1] = -1
            pos, neg = subsample_labels(classes, num_samples=self.batch_size_per_image,
                                        positive_fraction=self.positive_fraction, bg_label=self.num_classes,
                                        generator=target.get("generator"))
            idx = torch.cat([pos, neg])
            out_boxes.append(props[idx])
            out_classes.append(classes[idx])
            out_gt.append(matched_gt[idx])
        return out_boxes, out_classes, out_gt

    @torch.no_grad()
    def inference(
        self, features: Tensor, proposals: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        logits, deltas = self.forward_with_given_boxes(features, proposals, image_sizes)
        counts = [p.shape[0] for p in proposals]
        return [
            fast_rcnn_inference(lg, dl, props, hw, self.box_coder, score_thresh=self.score_thresh,
                                nms_thresh=self.nms_thresh, detections_per_image=self.detections_per_image)
            for lg, dl, props, hw in zip(logits.split(counts), deltas.split(counts), proposals, image_sizes)
        ]
