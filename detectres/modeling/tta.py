"""Test-time procedures of the ResNet paper around a trained C4 detector.

* single scale (the baseline), optionally with box refinement (:class:`BoxRefinement`);
* the paper's multi-scale testing (:class:`MultiScaleTesting`): res4 at several shortest sides,
  proposals from one of them, each RoI pooled at the two adjacent scales whose scaled area brackets
  ``canonical_size``**2, res5 on both, element-wise max before the predictor;
* image-level test-time augmentation (:class:`ImageTTA`): several sizes and horizontal flip, boxes
  mapped back to the original image, merged by per-class NMS or box voting.

Each add-on is a small typed class whose signature holds its defaults (``configs/test/*.yaml`` mirror
them). Inputs are per-image dicts with the ORIGINAL image (3, H, W) uint8 BGR; every size is chosen
here. All boxes are scored and decoded in original-image pixels (box deltas are scale-invariant).
The resized copies a procedure needs can be made ahead, in a data loader's workers, by the
:class:`TestTimeResize` that :meth:`TestTimeDetector.input_mapper` returns (the same pixels).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from detectres.config.constraints import Fraction, ImageSide, PositiveFloat, Sizes
from detectres.modeling.detector import FasterRCNN
from detectres.modeling.postprocessing import nonempty_detections
from detectres.modeling.roi_heads.refinement import refine_detections
from detectres.structures.boxes import box_area, scale_boxes
from detectres.utils.resize import resize_shortest_edge

MERGES = ("nms", "vote")


@dataclass
class BoxRefinement:
    """Re-score and re-regress each regressed box with the same head, union with the first predictions,
    NMS at ``nms_thresh``, then box voting at IoU ``vote_thresh`` (None: no voting)."""

    nms_thresh: Fraction = 0.3
    vote_thresh: Fraction | None = 0.5


@dataclass
class MultiScaleTesting:
    """res4 at each of ``scales`` (shortest sides), proposals from ``proposal_scale``, each RoI pooled
    at the two adjacent scales whose scaled area brackets ``canonical_size``**2 (None: the RoI's pooled
    extent in input pixels, 14 x 16 = 224 for the paper's model)."""

    scales: Sizes = (200, 400, 600, 800, 1000)
    proposal_scale: ImageSide = 600
    canonical_size: PositiveFloat | None = 224

    def __post_init__(self):
        self.scales = tuple(sorted(int(s) for s in self.scales))
        if len(self.scales) < 2:
            raise ValueError(f"multi-scale testing needs at least two scales, got {list(self.scales)}")
        if self.proposal_scale not in self.scales:
            raise ValueError(f"multiscale.proposal_scale {self.proposal_scale} must be one of multiscale.scales "
                             f"{list(self.scales)}")


@dataclass
class ImageTTA:
    """Detect at each of ``sizes`` (shortest sides), also flipped when ``flip``; merge the passes by
    per-class NMS at ``nms_thresh`` (``merge="nms"``) or NMS then box voting at ``vote_thresh``."""

    sizes: Sizes = (600, 800, 1000)
    flip: bool = True
    merge: Literal[MERGES] = "vote"  # type: ignore[valid-type]
    nms_thresh: Fraction = 0.5
    vote_thresh: Fraction = 0.5

    def __post_init__(self):
        self.sizes = tuple(int(s) for s in self.sizes)
        if self.merge not in MERGES:
            raise ValueError(f"tta.merge must be one of {MERGES}, got {self.merge!r}")


@dataclass
class ScaleFeatures:
    """Backbone features (res4, or the pyramid) of one resized copy of an image; ``factor`` = (fx, fy) from
    original pixels."""

    features: Tensor
    image_hw: tuple[int, int]
    factor: tuple[float, float]


def choose_scale_pairs(areas: Tensor, factors: Tensor, canonical_size: float) -> Tensor:
    """(R,) areas in original pixels, (S,) increasing scale factors -> (R, 2) indices of adjacent scales.

    The pair is (j, j+1) with j the largest scale at which the RoI's area is at most
    ``canonical_size``**2 (so the two scaled areas bracket it), clamped to the first / last pair.
    """
    if len(factors) < 2:
        raise ValueError("multi-scale testing needs at least two scales")
    scaled = areas[:, None] * factors[None, :] ** 2
    j = (scaled <= canonical_size ** 2).sum(dim=1) - 1
    j = j.clamp(min=0, max=len(factors) - 2)
    return torch.stack([j, j + 1], dim=1)


def resized_copy(image: Tensor, short: int, *, min_size: int, max_size: int, interpolation: str) -> Tensor:
    """(3, H, W) uint8 -> the copy whose shortest side is ``short``; the long-side cap grows with the
    scale (``max_size`` at ``min_size``), so large test scales are not all clipped to one size."""
    hwc = np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
    cap = round(max_size * max(1.0, short / min_size))
    resized = resize_shortest_edge(hwc, short, cap, interpolation)
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))


@dataclass(frozen=True)
class TestTimeResize:
    """Adds ``resized``: {(shortest side, flipped): (3, h, w) uint8} to an item, for each pair in
    ``plan``; picklable, so a data loader's workers can run it. The copies are the very tensors
    :meth:`TestTimeDetector.features_at` would make itself."""

    __test__ = False  # not a pytest test class despite the name

    plan: tuple[tuple[int, bool], ...]
    min_size: int
    max_size: int
    interpolation: str

    def __call__(self, item: dict) -> dict:
        image = item["image"]
        flipped = image.flip(-1) if any(flip for _, flip in self.plan) else None
        item["resized"] = {(short, flip): resized_copy(flipped if flip else image, short, min_size=self.min_size,
                                                       max_size=self.max_size, interpolation=self.interpolation)
                           for short, flip in self.plan}
        return item


def flip_boxes(boxes: Tensor, width: int) -> Tensor:
    """Boxes of a horizontally flipped image of ``width`` -> boxes in the unflipped image."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


class TestTimeDetector(nn.Module):
    """Wraps a :class:`FasterRCNN` for evaluation with the paper's add-ons (each optional); inference only."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, *, model: FasterRCNN, min_size: int, max_size: int, interpolation: str = "bilinear",
                 refine: BoxRefinement | None = None, multiscale: MultiScaleTesting | None = None,
                 tta: ImageTTA | None = None):
        super().__init__()
        if multiscale is not None and not hasattr(type(model.roi_heads), "roi_extent"):  # one native RoI scale
            raise ValueError("multi-scale testing (test=multiscale or test=paper) is the paper's C4 procedure: res5 "
                             "features of each RoI pooled at two image scales, maxed element-wise. An FPN detector "
                             "already pools each RoI from the pyramid level that suits it; for several image "
                             "scales use test=tta (image-level multi-scale and flips, merged by NMS or voting)")
        self.model = model
        self.min_size, self.max_size, self.interpolation = int(min_size), int(max_size), interpolation
        self.refine, self.multiscale, self.tta = refine, multiscale, tta

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def resize_plan(self) -> tuple[tuple[int, bool], ...]:
        """Every (shortest side, flipped) copy of an image this procedure runs the backbone on."""
        flips = (False, True) if self.tta is not None and self.tta.flip else (False,)
        if self.multiscale is not None:
            sizes = self.multiscale.scales
        else:
            sizes = self.tta.sizes if self.tta is not None else (self.min_size,)
        return tuple((int(s), f) for s in dict.fromkeys(sizes) for f in flips)

    def input_mapper(self) -> TestTimeResize:
        """What makes this procedure's resized copies of an item ahead of :meth:`inference` (in a
        data loader's workers); the detections are the same as without it."""
        return TestTimeResize(self.resize_plan(), self.min_size, self.max_size, self.interpolation)

    @torch.no_grad()
    def inference(self, batched_inputs: list[dict]) -> list[dict[str, Tensor]]:
        """Per item: ``image`` and, when :meth:`input_mapper` ran on it, its ``resized`` copies."""
        return [self.detect(x["image"], x.get("resized")) for x in batched_inputs]

    def detect(self, image: Tensor, resized: dict[tuple[int, bool], Tensor] | None = None) -> dict[str, Tensor]:
        """One original image (3, H, W) -> detections in its pixels; ``resized``: copies made ahead
        (see :meth:`input_mapper`), else each is made here."""
        if self.tta is None:
            return self.detect_once(image, self.min_size, flip=False, resized=resized)
        t = self.tta
        passes = [self.detect_once(image, size, flip, resized) for size in t.sizes
                  for flip in ((False, True) if t.flip else (False,))]
        merged = self.model.roi_heads.merge_detections(
            torch.cat([p["pred_boxes"] for p in passes]), torch.cat([p["scores"] for p in passes]),
            torch.cat([p["pred_classes"] for p in passes]), nms_thresh=t.nms_thresh,
            vote_thresh=t.vote_thresh if t.merge == "vote" else None)
        return nonempty_detections(merged)

    def features_at(self, image: Tensor, short: int, resized: Tensor | None = None) -> ScaleFeatures:
        """res4 of ``image`` at shortest side ``short``; ``resized``: that copy, when made ahead."""
        h, w = image.shape[-2:]
        if resized is None:
            resized = resized_copy(image, short, min_size=self.min_size, max_size=self.max_size,
                                   interpolation=self.interpolation)
        new_h, new_w = resized.shape[-2:]
        batch = self.model.preprocess([{"image": resized}])
        return ScaleFeatures(self.model.backbone(batch.tensor), batch.image_sizes[0], (new_w / w, new_h / h))

    def detect_once(self, image: Tensor, size: int, flip: bool,
                    resized: dict[tuple[int, bool], Tensor] | None = None) -> dict[str, Tensor]:
        h, w = image.shape[-2:]
        if flip:
            image = image.flip(-1)
        ms = self.multiscale
        scales = list(ms.scales) if ms else [size]
        levels = [self.features_at(image, s, (resized or {}).get((s, flip))) for s in scales]
        source = levels[scales.index(ms.proposal_scale)] if ms else levels[0]
        proposals = self.model.rpn.inference(source.features, [source.image_hw])[0]
        proposals = scale_boxes(proposals, (1.0 / source.factor[0], 1.0 / source.factor[1]))

        def score(boxes: Tensor) -> tuple[Tensor, Tensor]:
            return self.score_boxes(levels, boxes)

        heads = self.model.roi_heads
        logits, deltas = score(proposals)
        if self.refine:
            result = refine_detections(heads, score, logits, deltas, proposals, (h, w),
                                       nms_thresh=self.refine.nms_thresh, vote_thresh=self.refine.vote_thresh)
        else:
            result = heads.detections(logits, deltas, proposals, (h, w))
        if flip:
            result["pred_boxes"] = flip_boxes(result["pred_boxes"], w)
        return nonempty_detections(result)

    def score_boxes(self, levels: list[ScaleFeatures], boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and deltas for (R, 4) boxes in original pixels: one scale, or the paper's maxout of two."""
        heads = self.model.roi_heads
        if len(levels) == 1:
            lv = levels[0]
            return heads.forward_with_given_boxes(lv.features, [scale_boxes(boxes, lv.factor)], [lv.image_hw])
        factors = torch.tensor([lv.factor[1] for lv in levels], device=boxes.device)
        canonical = self.multiscale.canonical_size or heads.roi_extent
        pairs = choose_scale_pairs(box_area(boxes), factors, canonical)
        merged = None
        for k, lv in enumerate(levels):
            for column in (0, 1):
                rows = torch.nonzero(pairs[:, column] == k, as_tuple=True)[0]
                if rows.numel() == 0:
                    continue
                feats = heads.box_features(lv.features, [scale_boxes(boxes[rows], lv.factor)], [lv.image_hw])
                if merged is None:
                    merged = feats.new_full((len(boxes), feats.shape[1]), float("-inf"))
                merged[rows] = torch.maximum(merged[rows], feats)
        if merged is None:  # no boxes at all
            merged = torch.zeros((0, heads.box_predictor.cls_score.in_features), device=boxes.device)
        return heads.box_predictor(merged)
