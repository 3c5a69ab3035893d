"""PASCAL VOC box evaluation: per-class AP and mAP, the devkit's matching rules.

Per class, detections from all images are sorted by score; each is matched to the ground-truth
box it overlaps most. IoU > threshold with an unmatched box is a true positive, with a box already
matched a false positive, with a ``difficult`` box neither. Two AP definitions:

- ``11point`` (VOC2007): the mean, over recall thresholds 0, 0.1, ..., 1, of the best precision at
  that recall or more;
- ``area`` (VOC2010 and later): the area under the precision envelope (precision made
  monotone from the right), summed where recall changes.

Results use COCO's keys in percent: ``AP50`` is the VOC mAP, ``AP`` its mean over IoU 0.5:0.95,
``AP75`` at 0.75; ``per_class`` holds AP50 per class. Boxes are continuous XYXY (see
:mod:`detectres.data.datasets.voc`), in which plain IoU equals the devkit's "+1" IoU.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections import defaultdict
from typing import Literal

import numpy as np
import torch

from detectres.data.datasets.base import DetectionDataset
from detectres.data.records import xywh_to_xyxy
from detectres.evaluation.coco import format_per_class_table
from detectres.utils.file_io import atomic_write_text

logger = logging.getLogger(__name__)

METRICS = ("11point", "area")
IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))


def point_interpolated_ap(recall: np.ndarray, precision: np.ndarray, thresholds: np.ndarray) -> float:
    """Mean over ``thresholds`` of max(precision[recall >= t]), 0 where recall never reaches t."""
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in thresholds]))


def area_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope, with recall running from 0 to 1."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # envelope: best precision at this recall or more
    changes = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[changes + 1] - r[changes]) * p[changes + 1]))


def average_precision(recall: np.ndarray, precision: np.ndarray, metric: str) -> float:
    if metric == "11point":
        return point_interpolated_ap(recall, precision, np.arange(0.0, 1.1, 0.1))  # the devkit's thresholds
    if metric == "area":
        return area_ap(recall, precision)
    raise ValueError(f"unknown VOC metric {metric!r}; choose one of {METRICS}")


RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's, so VOC and COCO curves plot alike


def interpolated_precision(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Best precision at each of :data:`RECALL_POINTS` or beyond (0 where recall never gets there)."""
    if not len(recall):
        return np.zeros(len(RECALL_POINTS))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, RECALL_POINTS, side="left")  # recall is non-decreasing
    return np.where(index < len(recall), envelope[np.minimum(index, len(recall) - 1)], 0.0)


def curve_table(curves: np.ndarray, names: list[str]) -> dict:
    """(IoU, class, recall point) precision -> the ``pr_curves.json`` layout of the COCO evaluator."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # classes without ground truth
        rows = {"0.5": curves[0], "0.75": curves[IOU_THRESHOLDS.index(0.75)], "0.5:0.95": np.nanmean(curves, axis=0)}
    precision = {k: [[None if np.isnan(x) else round(float(x), 5) for x in row] for row in v] for k, v in rows.items()}
    return {"recall": [round(float(r), 4) for r in RECALL_POINTS], "classes": list(names), "precision": precision}


def pairwise_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of XYXY boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, np.finfo(np.float64).eps)


def best_overlaps(image_ids: np.ndarray, boxes: np.ndarray, gt: dict[int, tuple[np.ndarray, np.ndarray]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """For each detection, the index of the ground-truth box it overlaps most and that IoU (-1, 0 if none)."""
    best = np.full(len(image_ids), -1, np.int64)
    overlap = np.zeros(len(image_ids))
    for image_id in np.unique(image_ids):
        gt_boxes = gt.get(int(image_id), (np.zeros((0, 4)), None))[0]
        if len(gt_boxes):
            rows = np.flatnonzero(image_ids == image_id)
            ious = pairwise_iou_np(boxes[rows], gt_boxes)
            best[rows], overlap[rows] = ious.argmax(axis=1), ious.max(axis=1)
    return best, overlap


def match_detections(image_ids: np.ndarray, scores: np.ndarray, boxes: np.ndarray,
                     gt: dict[int, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections sorted by score (stable): (image ids, best ground-truth index, its IoU). The best box
    does not depend on the IoU threshold, so this is computed once for all thresholds."""
    order = np.argsort(-scores, kind="stable")
    best, overlap = best_overlaps(image_ids[order], boxes[order], gt)
    return image_ids[order], best, overlap


def precision_recall_at(matched: tuple[np.ndarray, np.ndarray, np.ndarray],
                        gt: dict[int, tuple[np.ndarray, np.ndarray]], iou_threshold: float
                        ) -> tuple[np.ndarray, np.ndarray, int]:
    """(recall, precision, number of non-difficult ground-truth boxes) from :func:`match_detections`."""
    image_ids, best, overlap = matched
    num_pos = int(sum((~difficult).sum() for _, difficult in gt.values()))
    hit = overlap > iou_threshold
    difficult = np.zeros(len(best), bool)
    for i in np.flatnonzero(hit):
        difficult[i] = gt[int(image_ids[i])][1][best[i]]
    keys = image_ids.astype(np.int64) * (1 + max((len(b) for b, _ in gt.values()), default=0)) + best
    candidates = np.flatnonzero(hit & ~difficult)
    _, first = np.unique(keys[candidates], return_index=True)  # the best-scored detection of each box
    is_tp = np.zeros(len(best), bool)
    is_tp[candidates[first]] = True
    keep = ~difficult  # detections of difficult boxes count neither way
    tp, fp = np.cumsum(is_tp[keep]), np.cumsum(~is_tp[keep])
    recall = tp / num_pos if num_pos else np.full(len(tp), np.nan)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return recall, precision, num_pos


def precision_recall(image_ids: np.ndarray, scores: np.ndarray, boxes: np.ndarray,
                     gt: dict[int, tuple[np.ndarray, np.ndarray]], iou_threshold: float
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """(recall, precision, number of non-difficult ground-truth boxes) for one class.

    Args:
        image_ids, scores, boxes: (D,), (D,), (D, 4) detections of the class.
        gt: image id -> ((G, 4) XYXY boxes, (G,) bool difficult) of the class.
    """
    return precision_recall_at(match_detections(image_ids, scores, boxes, gt), gt, iou_threshold)


class VOCEvaluator:
    """Collects detections for a :class:`DetectionDataset` and scores them the VOC way.

    Ground truth is the dataset's records; ``difficult`` (and ``iscrowd``) boxes are ignored. Only
    the images passed to :meth:`process` are scored.
    """

    def __init__(self, dataset: DetectionDataset, metric: Literal[METRICS] = "11point"):  # type: ignore[valid-type]
        if metric not in METRICS:
            raise ValueError(f"unknown VOC metric {metric!r}; choose one of {', '.join(METRICS)}")
        self.dataset = dataset
        self.metric = metric
        self.image_ids: list[int] = []
        self.detections: dict[int, list[tuple[int, float, list[float]]]] = defaultdict(list)

    def process(self, inputs: list[dict], outputs: list[dict[str, torch.Tensor]]) -> None:
        for x, out in zip(inputs, outputs):
            image_id = int(x["image_id"])
            self.image_ids.append(image_id)
            for box, score, label in zip(out["pred_boxes"].detach().cpu().double().tolist(), out["scores"].tolist(),
                                         out["pred_classes"].tolist()):
                self.detections[int(label)].append((image_id, float(score), box))

    def ground_truth(self) -> list[dict[int, tuple[np.ndarray, np.ndarray]]]:
        """Per label: image id -> ((G, 4) XYXY boxes, (G,) difficult) over the processed images."""
        per_label: list[dict] = [defaultdict(lambda: ([], [])) for _ in self.dataset.class_names]
        for image_id in dict.fromkeys(self.image_ids):  # each image once, in order
            for ann in self.dataset.coco.imgToAnns.get(image_id, []):
                boxes, difficult = per_label[self.dataset.category_id_to_label[ann["category_id"]]][image_id]
                boxes.append(xywh_to_xyxy(ann["bbox"]))
                difficult.append(bool(ann.get("difficult", 0) or ann.get("iscrowd", 0)))
        return [{i: (np.asarray(b, np.float64).reshape(-1, 4), np.asarray(d, bool)) for i, (b, d) in g.items()}
                for g in per_label]

    def evaluate(self, output_dir: str | None = None) -> dict:
        """Score, print the per-class table, write devkit-format result files to ``output_dir``."""
        if output_dir:
            self.write_devkit_results(os.path.join(output_dir, "voc_results"))
        names = self.dataset.class_names
        ap = np.full((len(IOU_THRESHOLDS), len(names)), np.nan)
        curves = np.full((len(IOU_THRESHOLDS), len(names), len(RECALL_POINTS)), np.nan)
        for label, gt in enumerate(self.ground_truth()):
            dets = self.detections.get(label, [])
            ids = np.array([d[0] for d in dets], np.int64)
            scores = np.array([d[1] for d in dets], np.float64)
            boxes = np.array([d[2] for d in dets], np.float64).reshape(-1, 4)
            matched = match_detections(ids, scores, boxes, gt)
            for t, iou in enumerate(IOU_THRESHOLDS):
                recall, precision, num_pos = precision_recall_at(matched, gt, iou)
                if num_pos:
                    ap[t, label] = average_precision(recall, precision, self.metric) * 100
                    curves[t, label] = interpolated_precision(recall, precision)
        if np.isnan(ap[0]).all():
            logger.warning("no ground-truth boxes in the evaluated images: every AP is undefined")
        mean = [float(np.nanmean(row)) if not np.isnan(row).all() else float("nan") for row in ap]
        per_class = {name: float(ap[0, k]) for k, name in enumerate(names)}
        print(format_per_class_table(per_class, title=f"Per-category VOC AP50 ({self.metric} metric)"))
        print(f"VOC mAP@0.5 ({self.metric}): {mean[0]:.2f} over {len(set(self.image_ids))} images")
        return {"AP": float(np.mean(mean)), "AP50": mean[0], "AP75": mean[IOU_THRESHOLDS.index(0.75)],
                "per_class": per_class, "metric": f"voc_{self.metric}", "curves": curve_table(curves, names)}

    def write_devkit_results(self, folder: str) -> None:
        """``comp4_det_test_<class>.txt`` files (image stem, score, 1-based box) for the official devkit."""
        for label, name in enumerate(self.dataset.class_names):
            lines = []
            for image_id, score, (x1, y1, x2, y2) in self.detections.get(label, []):
                stem = os.path.splitext(os.path.basename(self.dataset.coco.imgs[image_id]["file_name"]))[0]
                lines.append(f"{stem} {score:.4f} {x1 + 1:.1f} {y1 + 1:.1f} {x2:.1f} {y2:.1f}\n")
            atomic_write_text("".join(lines), os.path.join(folder, f"comp4_det_test_{name}.txt"))
