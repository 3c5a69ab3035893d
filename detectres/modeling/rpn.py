"""Region Proposal Network: head, proposal generation and the anchors' labels, on one feature map (C4)
or several (FPN's P2..P6, one head shared by all levels, as Detectron2).

``forward`` is the training computation (proposals and the RPN losses); ``inference`` returns
proposals only. ``features`` is one (N, C, H, W) map or a list of them, one per level. Shapes: N images, A
anchors per location, P = sum over levels of H_l * W_l * A anchors per image (levels concatenated in
order), G ground-truth boxes in an image.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from detectres.config.constraints import Channels, Fraction, NonNegativeFloat, SampleCap, TopK
from detectres.modeling.anchors import AnchorGenerator
from detectres.modeling.box_coder import BoxCoder
from detectres.modeling.features import feature_levels
from detectres.modeling.losses import rpn_losses
from detectres.modeling.matcher import Matcher
from detectres.modeling.postprocessing import first_k_per_image
from detectres.modeling.sampling import subsample_labels
from detectres.structures.boxes import clip_boxes, nonempty_mask, pairwise_iou
from detectres.structures.image_list import image_sizes_tensor
from detectres.utils.amp import fp32_only


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
        with fp32_only(t):  # box deltas stay fp32 under autocast (decoded into 800 px coordinates)
            deltas = self.anchor_deltas(t.float())
        return self.objectness_logits(t).float(), deltas


def flatten_rpn_outputs(logits: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor]:
    """(N, A, H, W), (N, A*4, H, W) -> (N, P), (N, P, 4) in the anchors' (y, x, a) order."""
    n, a, h, w = logits.shape
    logits = logits.permute(0, 2, 3, 1).reshape(n, -1)
    deltas = deltas.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
    return logits, deltas


class RPN(nn.Module):
    """Proposals from anchors placed every ``strides[l]`` pixels on feature level l.

    Args:
        in_channels, strides: of the feature maps (given by the detector from its backbone).
        anchor_generator: a callable (Hydra partial) taking ``strides`` -> :class:`AnchorGenerator`.
        pre_nms_topk_*: per image and level; post_nms_topk_*: per image; for the training
            computation (``forward``) and for ``inference``. NMS runs per image and level.
    """

    starts_untrained = True  # an ImageNet backbone file has none of it (see weights/loading.py)

    def __init__(
        self,
        *,
        in_channels: int,
        strides: list[int],
        anchor_generator: Callable[..., AnchorGenerator],
        matcher: Matcher,
        box_coder: BoxCoder,
        batch_size_per_image: SampleCap = 256,
        positive_fraction: Fraction = 0.5,
        pre_nms_topk_train: TopK = 12000,
        post_nms_topk_train: TopK = 2000,
        pre_nms_topk_test: TopK = 6000,
        post_nms_topk_test: TopK = 300,
        nms_thresh: Fraction = 0.7,
        min_box_size: NonNegativeFloat = 0.0,
        loss_weight: NonNegativeFloat = 1.0,
        box_reg_loss_weight: NonNegativeFloat = 1.0,
        smooth_l1_beta: NonNegativeFloat = 0.0,
        head_channels: Channels | None = None,
    ):
        super().__init__()
        self.anchor_generator = anchor_generator(strides=list(strides))
        self.head = RPNHead(in_channels=in_channels, num_anchors=self.anchor_generator.num_anchors,
                            conv_channels=head_channels)
        self.matcher = matcher
        self.box_coder = box_coder
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.topk_train = (pre_nms_topk_train, post_nms_topk_train)
        self.topk_test = (pre_nms_topk_test, post_nms_topk_test)
        self.nms_thresh = nms_thresh
        self.min_box_size = min_box_size
        self.loss_weights = {"loss_weight": loss_weight, "box_reg_loss_weight": box_reg_loss_weight,
                             "smooth_l1_beta": smooth_l1_beta}

    def head_outputs(self, features: Tensor | list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per level: (P_l, 4) anchors, (N, P_l) logits and (N, P_l, 4) deltas."""
        features = feature_levels(features)
        anchors = self.anchor_generator([f.shape[-2:] for f in features])
        logits, deltas = zip(*(flatten_rpn_outputs(*self.head(f)) for f in features))
        return list(anchors), list(logits), list(deltas)

    def forward(self, features: Tensor | list[Tensor], image_sizes: list[tuple[int, int]], targets: list[dict]
                ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Training: per-image proposals (R_i, 4) for the RoI heads (no gradient) and the losses
        ``loss_rpn_cls``, ``loss_rpn_loc`` on anchors sampled per ``targets``."""
        anchors, logits, deltas = self.head_outputs(features)
        all_anchors = torch.cat(anchors)
        labels, matched_gt = self.label_and_sample_anchors(all_anchors, targets)
        losses = rpn_losses(torch.cat(logits, dim=1), torch.cat(deltas, dim=1), labels, matched_gt, all_anchors,
                            self.box_coder, normalizer=self.batch_size_per_image * len(targets), **self.loss_weights)
        proposals, _ = self.select_proposals(anchors, [x.detach() for x in logits], [x.detach() for x in deltas],
                                             image_sizes, self.topk_train)
        return proposals, losses

    @torch.no_grad()
    def proposals_with_logits(self, features: Tensor | list[Tensor], image_sizes: list[tuple[int, int]]
                              ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: proposals (R_i, 4) and their objectness logits (R_i,), best first."""
        return self.select_proposals(*self.head_outputs(features), image_sizes, self.topk_test)

    def inference(self, features: Tensor | list[Tensor], image_sizes: list[tuple[int, int]]) -> list[Tensor]:
        """Per-image proposals (R_i, 4) in input pixels, best first."""
        return self.proposals_with_logits(features, image_sizes)[0]

    @torch.no_grad()
    def select_proposals(self, anchors: list[Tensor], logits: list[Tensor], deltas: list[Tensor],
                         image_sizes: list[tuple[int, int]], topk: tuple[int, int]) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: top-k by logit on each level -> decode -> clip -> drop non-finite and empty -> NMS per
        level -> top-k over all levels (sorted by logit). Per level l: ``anchors`` (P_l, 4), ``logits``
        (N, P_l), ``deltas`` (N, P_l, 4). All images at once (one ``batched_nms`` keyed by image and level;
        the few host syncs are per batch, not per image); traceable for export (one image)."""
        n = len(image_sizes)
        scores, chosen, chosen_anchors, levels = [], [], [], []
        for level, (level_anchors, level_logits, level_deltas) in enumerate(zip(anchors, logits, deltas)):
            top, index = level_logits.topk(topk_count(level_logits, topk[0]), dim=1)
            scores.append(top)
            chosen.append(level_deltas.gather(1, index[..., None].expand(-1, -1, 4)))
            chosen_anchors.append(level_anchors[index])
            levels.append(torch.full_like(index, level))
        levels = torch.cat(levels, dim=1)
        boxes = self.box_coder.decode(torch.cat(chosen, dim=1).reshape(-1, 4), torch.cat(chosen_anchors, dim=1).reshape(-1, 4))
        scores = torch.cat(scores, dim=1).reshape(-1)
        images = torch.arange(n, device=boxes.device)[:, None].expand_as(levels).reshape(-1)
        finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        boxes = clip_boxes(boxes, image_sizes_tensor(image_sizes, boxes.device)[images])
        keep = (finite & nonempty_mask(boxes, self.min_box_size)).nonzero().squeeze(1)
        groups = images * len(anchors) + levels.reshape(-1)
        kept = batched_nms(boxes[keep], scores[keep], groups[keep], self.nms_thresh)
        per_image = first_k_per_image(keep[kept], images, topk[1], n)
        return [boxes[i] for i in per_image], [scores[i] for i in per_image]

    @torch.no_grad()
    def label_and_sample_anchors(self, anchors: Tensor, targets: list[dict]) -> tuple[Tensor, Tensor]:
        """(N, P) labels (1 positive, 0 negative, -1 not sampled) of ``batch_size_per_image`` anchors per
        image (drawn from the target's ``generator`` when it has one) and (N, P, 4) matched boxes."""
        labels, matched = [], []
        for target in targets:
            gt = target["gt_boxes"]
            matches, match_labels = self.matcher(pairwise_iou(gt, anchors))
            pos, neg = subsample_labels(match_labels, num_samples=self.batch_size_per_image,
                                        positive_fraction=self.positive_fraction, bg_label=0,
                                        generator=target.get("generator"))
            sampled = torch.full_like(match_labels, -1, dtype=torch.float32)
            sampled[pos], sampled[neg] = 1.0, 0.0
            labels.append(sampled)
            matched.append(gt[matches] if gt.numel() else torch.zeros_like(anchors))
        return torch.stack(labels), torch.stack(matched)


def topk_count(values: Tensor, k: int) -> Tensor | int:
    """min(k, values.shape[-1]): an int, or while tracing a graph value (so the export keeps it dynamic)."""
    if not torch.jit.is_tracing():
        return min(k, values.shape[-1])
    return torch.clamp(torch._shape_as_tensor(values)[-1], max=k)
