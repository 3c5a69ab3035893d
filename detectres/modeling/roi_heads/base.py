"""What every Faster R-CNN RoI head shares: sampling RoIs for training, the Fast R-CNN losses, and turning
scores and deltas into detections.

A head subclasses :class:`ROIHeads` and defines :meth:`ROIHeads.box_features` (R boxes -> (R, D)
features) and ``box_predictor``: the C4 head runs res5 per RoI (res5_head.py), the FPN head pools from
P2..P5 and runs two fc layers (fpn_head.py). Everything that turns scores and deltas into detections goes
through :meth:`ROIHeads.detections` (or its two halves ``class_boxes`` and ``merge_detections``), which
refinement, multi-scale testing, image TTA and ensembles call too. Shapes: N images, R RoIs, D feature
size, K foreground classes, G ground-truth boxes.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from detectres.config.constraints import Fraction, NonNegativeFloat, PerImage, SampleCap
from detectres.modeling.box_coder import BoxCoder
from detectres.modeling.losses import fast_rcnn_losses
from detectres.modeling.matcher import Matcher
from detectres.modeling.postprocessing import (class_scores_and_boxes, flatten_class_matrix, merge_detections,
                                               per_image_detections, row_image_index)
from detectres.modeling.sampling import subsample_labels
from detectres.structures.boxes import pairwise_iou


class ROIHeads(nn.Module):
    """The shared part, and the arguments every head takes: a head declares only its own and passes the
    rest (``**shared``) here, where they are typed, so the schema checks them wherever they are set.
    ``features`` everywhere is the backbone's output: one (N, C, H, W) map (C4) or a list of them (FPN).

    Args:
        num_classes, matcher, box_coder: the foreground classes, the IoU matcher and the box coder.
        batch_size_per_image, positive_fraction, proposal_append_gt: how training samples RoIs.
        score_thresh, nms_thresh, detections_per_image: what :meth:`detections` keeps.
        smooth_l1_beta: the box-regression loss (0: L1).
    """

    box_predictor: nn.Module

    def __init__(self, *, num_classes: int, matcher: Matcher, box_coder: BoxCoder, batch_size_per_image: SampleCap = 512,
                 positive_fraction: Fraction = 0.25, proposal_append_gt: bool = True, score_thresh: Fraction = 0.05,
                 nms_thresh: Fraction = 0.5, detections_per_image: PerImage = 100,
                 smooth_l1_beta: NonNegativeFloat = 0.0):
        super().__init__()
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

    def box_features(self, features, boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        """(R, D) features of N lists of boxes (in input pixels) for the predictor."""
        raise NotImplementedError

    def forward_with_given_boxes(self, features, boxes: list[Tensor],
                                 image_sizes: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        """Score and regress given boxes: logits (R, K+1), deltas (R, K*4)."""
        return self.box_predictor(self.box_features(features, boxes, image_sizes))

    # -- training ---------------------------------------------------------------------------------
    def forward(self, features, proposals: list[Tensor], image_sizes: list[tuple[int, int]],
                targets: list[dict]) -> dict[str, Tensor]:
        """Training: ``loss_cls`` and ``loss_box_reg`` on RoIs sampled from ``proposals`` per ``targets``."""
        boxes, classes, gt_boxes = self.label_and_sample(proposals, targets)
        logits, deltas = self.forward_with_given_boxes(features, boxes, image_sizes)
        return fast_rcnn_losses(logits, deltas, torch.cat(boxes), torch.cat(classes), torch.cat(gt_boxes),
                                self.box_coder, self.smooth_l1_beta)

    @torch.no_grad()
    def label_and_sample(self, proposals: list[Tensor], targets: list[dict]
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
                classes, matched_gt = gt_cls[matches].clone(), gt[matches]
            else:
                classes, matched_gt = torch.zeros_like(matches), torch.zeros_like(props)
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

    # -- detections -------------------------------------------------------------------------------
    def class_boxes(self, logits: Tensor, deltas: Tensor, boxes: Tensor, image_hw: tuple[int, int] | Tensor
                    ) -> tuple[Tensor, Tensor]:
        """(R, K) class probabilities and (R, K, 4) class-specific boxes, clipped to ``image_hw``."""
        return class_scores_and_boxes(logits, deltas, boxes, image_hw, self.box_coder)

    def merge_detections(self, boxes: Tensor, scores: Tensor, classes: Tensor, *, nms_thresh: float | None = None,
                         vote_thresh: float | None = None) -> dict[str, Tensor]:
        """Flat candidates -> score > ``score_thresh``, per-class NMS (``nms_thresh`` unless given),
        top ``detections_per_image``, optional box voting."""
        return merge_detections(boxes, scores, classes, score_thresh=self.score_thresh,
                                nms_thresh=self.nms_thresh if nms_thresh is None else nms_thresh,
                                vote_thresh=vote_thresh, max_detections=self.detections_per_image)

    def detections(self, logits: Tensor, deltas: Tensor, boxes: Tensor, image_hw: tuple[int, int] | Tensor
                   ) -> dict[str, Tensor]:
        """One image's detections from its scored boxes: ``pred_boxes`` (D, 4) in the pixels of
        ``image_hw`` ((h, w), or each box's (R, 2) sizes), ``scores`` (D,), ``pred_classes`` (D,), best first."""
        return self.merge_detections(*flatten_class_matrix(*self.class_boxes(logits, deltas, boxes, image_hw)))

    @torch.no_grad()
    def inference(self, features, proposals: list[Tensor], image_sizes: list[tuple[int, int]]
                  ) -> list[dict[str, Tensor]]:
        """Per-image detections in input pixels (see :meth:`detections`), all images post-processed at once."""
        logits, deltas = self.forward_with_given_boxes(features, proposals, image_sizes)
        image_index = row_image_index(proposals)
        return per_image_detections(logits, deltas, torch.cat(proposals), image_index, image_sizes, self.box_coder,
                                    score_thresh=self.score_thresh, nms_thresh=self.nms_thresh,
                                    max_detections=self.detections_per_image)
