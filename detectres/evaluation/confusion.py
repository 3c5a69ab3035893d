"""Where a model confuses classes, and which score threshold to deploy it at.

- :func:`confusion_matrix`: (K+1) x (K+1) counts at IoU ``iou`` among detections scoring at least
  ``conf_thresh``. Rows are the ground truth (K classes, then "background": detections that match no box),
  columns the prediction (K classes, then "background": boxes no detection found). In each image the
  detections, best first, take the unmatched ground-truth box they overlap most (any class), so every
  ground-truth box is counted once: row k sums to the number of class-k boxes. Boxes left out of scoring
  (crowd, VOC's difficult) are not counted, and a detection on one of them is neither right nor wrong.
- :func:`threshold_curves`: precision, recall and F1 of all classes together at every score threshold
  (IoU 0.5, a detection matches an unmatched box of its own class, best first), and the threshold with the
  best F1.

Pure numpy on per-image arrays; :func:`gather` makes them from the records and the evaluation's outputs.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)


def gather(records, inputs_outputs) -> list[tuple]:
    """Per scored image: (gt boxes XYXY (G, 4), gt labels (G,), gt ignored (G,), det boxes (D, 4),
    det scores (D,), det labels (D,)), from a :class:`DetectionDataset` and (inputs, outputs) batches."""
    images = []
    for inputs, outputs in inputs_outputs:
        for x, out in zip(inputs, outputs):
            boxes = records.boxes_of(int(x["image_id"]))
            images.append((boxes.xyxy(), records.labels_of(boxes), records.ignored(boxes),
                           out["pred_boxes"].float().numpy().reshape(-1, 4), out["scores"].float().numpy(),
                           out["pred_classes"].numpy()))
    return images


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return box_iou(torch.from_numpy(a).double(), torch.from_numpy(b).double()).numpy()


def match(gt: np.ndarray, det: np.ndarray, iou_thresh: float, same_class: np.ndarray | None = None) -> np.ndarray:
    """For detections in score order, the ground-truth index each takes (-1: none): the unmatched box it
    overlaps most at IoU >= ``iou_thresh`` (only where ``same_class[d, g]`` when given)."""
    taken = np.full(len(det), -1)
    if not len(gt) or not len(det):
        return taken
    iou = iou_matrix(det, gt)
    if same_class is not None:
        iou = np.where(same_class, iou, -1.0)
    free = np.ones(len(gt), bool)
    for d in range(len(det)):
        candidates = np.where(free, iou[d], -1.0)
        g = int(np.argmax(candidates))
        if candidates[g] >= iou_thresh:
            taken[d], free[g] = g, False
    return taken


def confusion_matrix(images: list[tuple], num_classes: int, iou: float = 0.5, conf_thresh: float = 0.5) -> np.ndarray:
    k = num_classes
    matrix = np.zeros((k + 1, k + 1), np.int64)
    for gt_boxes, gt_labels, ignored, boxes, scores, labels in images:
        keep = scores >= conf_thresh
        order = np.argsort(-scores[keep], kind="stable")
        boxes, labels = boxes[keep][order], labels[keep][order]
        taken = match(gt_boxes, boxes, iou)
        found = np.zeros(len(gt_boxes), bool)
        found[taken[taken >= 0]] = True
        for d, g in enumerate(taken):
            if g < 0:
                matrix[k, labels[d]] += 1            # a detection of nothing
            elif not ignored[g]:
                matrix[gt_labels[g], labels[d]] += 1
        for g in np.flatnonzero(~found & ~ignored):
            matrix[gt_labels[g], k] += 1             # a box nothing found
    return matrix


def threshold_curves(images: list[tuple], iou: float = 0.5) -> dict:
    """``thresholds``, ``precision``, ``recall``, ``f1`` (lists) and ``best`` (threshold, f1, precision, recall)."""
    hits, all_scores, total = [], [], 0
    for gt_boxes, gt_labels, ignored, boxes, scores, labels in images:
        order = np.argsort(-scores, kind="stable")
        boxes, scores, labels = boxes[order], scores[order], labels[order]
        taken = match(gt_boxes, boxes, iou, labels[:, None] == gt_labels[None, :])
        on_ignored = (taken >= 0) & ignored[np.maximum(taken, 0)]
        hits.append(((taken >= 0) & ~on_ignored)[~on_ignored])
        all_scores.append(scores[~on_ignored])
        total += int((~ignored).sum())
    hits, all_scores = np.concatenate(hits or [np.zeros(0, bool)]), np.concatenate(all_scores or [np.zeros(0)])
    kept = all_scores[None, :] >= THRESHOLDS[:, None]
    tp, n = (kept & hits[None, :]).sum(1), kept.sum(1)
    precision = np.where(n > 0, tp / np.maximum(n, 1), 1.0)
    recall = tp / max(total, 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = int(np.argmax(f1))
    return {"thresholds": THRESHOLDS.tolist(), "precision": precision.round(5).tolist(),
            "recall": recall.round(5).tolist(), "f1": f1.round(5).tolist(),
            "best": {"threshold": float(THRESHOLDS[best]), "f1": float(f1[best]), "precision": float(precision[best]),
                     "recall": float(recall[best])}}


def confusion_report(records, inputs_outputs, conf_thresh: float = 0.5, iou: float = 0.5) -> dict:
    """What an evaluation writes as ``confusion_matrix.json``: the classes (and background), the matrix,
    its settings, and the threshold curves with the best-F1 threshold."""
    images = gather(records, inputs_outputs)
    matrix = confusion_matrix(images, len(records.class_names), iou, conf_thresh)
    return {"classes": [*records.class_names, "background"], "iou": iou, "conf_thresh": conf_thresh,
            "matrix": matrix.tolist(), "thresholds": threshold_curves(images, iou)}
