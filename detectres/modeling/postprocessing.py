"""From class scores and box deltas to detections: decode, threshold, per-class NMS, top-k, box voting,
and the mapping back to the original image. Pure tensor functions.

Shapes: R scored boxes, K foreground classes, M candidate detections, D detections.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms

from detectres.modeling.box_coder import BoxCoder
from detectres.structures.boxes import clip_boxes, nonempty_mask, pairwise_iou, scale_boxes
from detectres.structures.image_list import image_sizes_tensor


def class_scores_and_boxes(logits: Tensor, deltas: Tensor, boxes: Tensor, image_hw: tuple[int, int] | Tensor,
                           box_coder: BoxCoder) -> tuple[Tensor, Tensor]:
    """Softmax scores without background (R, K) and class-specific boxes (R, K, 4) clipped to ``image_hw``
    (one image's (h, w), or an (R, 2) tensor with each row's image size).

    A row whose scores or boxes are not finite gets score 0 everywhere, so no threshold keeps it.
    """
    scores = F.softmax(logits.float(), dim=1)[:, :-1]
    k = scores.shape[1]
    decoded = box_coder.decode(deltas, boxes).view(-1, k, 4)
    finite = torch.isfinite(decoded).all(dim=2).all(dim=1) & torch.isfinite(scores).all(dim=1)
    scores = torch.where(finite[:, None], scores, torch.zeros_like(scores))
    if isinstance(image_hw, Tensor):
        image_hw = image_hw.repeat_interleave(k, dim=0)
    return scores, clip_boxes(decoded.reshape(-1, 4), image_hw).view(-1, k, 4)


def flatten_class_matrix(scores: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(R, K) scores and (R, K, 4) boxes -> flat (R*K, 4) boxes, (R*K,) scores, (R*K,) classes."""
    k = scores.shape[1]
    classes = torch.arange(k, device=scores.device).repeat(scores.shape[0])
    return boxes.reshape(-1, 4), scores.reshape(-1), classes


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
    """Flat candidates (M, 4), (M,), (M,) -> score > thresh, per-class NMS, top-k, optional voting.
    Returns ``pred_boxes`` (D, 4), ``scores`` (D,), ``pred_classes`` (D,), best first."""
    keep = scores > score_thresh
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    kept = batched_nms(boxes, scores, classes, nms_thresh)[:max_detections]
    out_boxes = boxes[kept]
    if vote_thresh is not None:
        out_boxes = box_voting(out_boxes, classes[kept], boxes, scores, classes, vote_thresh)
    return {"pred_boxes": out_boxes, "scores": scores[kept], "pred_classes": classes[kept]}


def first_k_per_image(order: Tensor, images: Tensor, k: int, num_images: int) -> list[Tensor]:
    """Of the indices ``order`` (best first, e.g. what NMS keeps), each image's first ``k`` (``images[i]`` is
    the image of index i): one tensor of indices per image, best first. A traced (exported) call holds one
    image (``ImageList.from_tensors``), so there it is the first ``k``, with no sort the ONNX opsets lack."""
    if torch.jit.is_tracing():
        return [order[:k]]
    grouped, perm = torch.sort(images[order], stable=True)
    rank = torch.arange(len(order), device=order.device) - torch.searchsorted(grouped, grouped)
    top = rank < k
    counts = torch.bincount(grouped[top], minlength=num_images).tolist()
    return list(order[perm][top].split(counts))


def row_image_index(parts: list[Tensor]) -> Tensor:
    """(R,) the image of every row of ``torch.cat(parts)``, ``parts`` being per-image (R_i, ...) tensors."""
    return torch.cat([torch.full_like(p[:, 0], i, dtype=torch.long) for i, p in enumerate(parts)])


def per_image_detections(logits: Tensor, deltas: Tensor, boxes: Tensor, image_index: Tensor,
                         image_sizes: list[tuple[int, int]], box_coder: BoxCoder, *, score_thresh: float,
                         nms_thresh: float, max_detections: int) -> list[dict[str, Tensor]]:
    """The detections of several images at once: R scored boxes of all images with (R,) ``image_index``
    -> per image what :func:`merge_detections` gives (no voting). One threshold, one ``batched_nms``
    keyed by image and class; the few host syncs (selection, split) are per batch, not per image."""
    sizes = image_sizes_tensor(image_sizes, boxes.device)[image_index]
    scores, class_boxes = class_scores_and_boxes(logits, deltas, boxes, sizes, box_coder)
    flat_boxes, flat_scores, classes = flatten_class_matrix(scores, class_boxes)
    images = image_index[:, None].expand_as(scores).reshape(-1)
    keep = (flat_scores > score_thresh).nonzero().squeeze(1)
    kept = batched_nms(flat_boxes[keep], flat_scores[keep], images[keep] * scores.shape[1] + classes[keep], nms_thresh)
    return [{"pred_boxes": flat_boxes[i], "scores": flat_scores[i], "pred_classes": classes[i]}
            for i in first_k_per_image(keep[kept], images, max_detections, len(image_sizes))]


def nonempty_detections(result: dict[str, Tensor]) -> dict[str, Tensor]:
    keep = nonempty_mask(result["pred_boxes"])
    return {k: v[keep] for k, v in result.items()}


def detector_postprocess(result: dict[str, Tensor], inputs: dict, input_hw: tuple[int, int]) -> dict[str, Tensor]:
    """Map boxes from the network input size back to ``inputs['height'] x inputs['width']`` (the
    input size when those are absent), clip them and drop empty ones."""
    if "height" in inputs or "width" in inputs:
        out_h, out_w = int(inputs.get("height", input_hw[0])), int(inputs.get("width", input_hw[1]))
        boxes = clip_boxes(scale_boxes(result["pred_boxes"], (out_w / input_hw[1], out_h / input_hw[0])), (out_h, out_w))
    else:  # the input's own pixels (always so in an exported graph, where input_hw are graph values)
        boxes = clip_boxes(result["pred_boxes"], input_hw)
    return nonempty_detections({**result, "pred_boxes": boxes})
