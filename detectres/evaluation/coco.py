"""COCO box evaluation: the standard 12 numbers plus per-class AP.

Two scoring engines give the same numbers: ``faster-coco-eval`` (the default: its C++ matching and
accumulation score a COCO-val-sized result set several times faster) and ``pycocotools`` (the
reference; ``data.evaluator.backend=pycocotools``). tests/test_evaluation_backends.py holds them equal.
Numbers are reported in percent, with Detectron2's key names (AP, AP50, AP75, APs, APm, APl).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from typing import Literal

import numpy as np
import torch
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval

from detectres.data.datasets.base import DetectionDataset
from detectres.utils.file_io import atomic_write_text

logger = logging.getLogger(__name__)

BACKENDS = ("faster-coco-eval", "pycocotools")
STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class COCOEvaluator:
    """Collects detections for a :class:`DetectionDataset` and scores them against its annotations.

    Only the images passed to :meth:`process` are scored.
    """

    def __init__(self, dataset: DetectionDataset, backend: Literal[BACKENDS] = "faster-coco-eval"):  # type: ignore[valid-type]
        if backend not in BACKENDS:
            raise ValueError(f"COCO scoring backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.dataset = dataset
        self.backend = backend
        self.results: list[dict] = []
        self.image_ids: list[int] = []

    def process(self, inputs: list[dict], outputs: list[dict[str, torch.Tensor]]) -> None:
        for x, out in zip(inputs, outputs):
            self.image_ids.append(int(x["image_id"]))
            self.results += coco_results(int(x["image_id"]), out["pred_boxes"].detach().cpu().float().tolist(),
                                         out["scores"].tolist(), out["pred_classes"].tolist(),
                                         self.dataset.label_to_category_id)

    def evaluate(self, output_dir: str | None = None) -> dict:
        """Run COCOeval; print the tables; write ``coco_instances_results.json`` to ``output_dir``.

        Returns ``{"AP": .., "AP50": .., ..., "per_class": {name: AP}}`` (percent).
        """
        if output_dir:
            atomic_write_text(json.dumps(self.results), os.path.join(output_dir, "coco_instances_results.json"))
        if not self.results:
            logger.warning("no detections at all: every AP is 0")
            return {**{k: 0.0 for k in STAT_KEYS}, "per_class": {n: 0.0 for n in self.dataset.class_names}}
        coco_eval, summary = score_boxes(self.dataset.coco, self.results, sorted(set(self.image_ids)),
                                         self.backend)
        print(summary)
        stats = {k: float(v * 100) if v >= 0 else float("nan") for k, v in zip(STAT_KEYS, coco_eval.stats)}
        stats["per_class"] = per_class_ap(coco_eval, self.dataset.class_names)
        stats["curves"] = pr_curves(coco_eval, self.dataset.class_names)
        print(format_per_class_table(stats["per_class"]))
        return stats


def coco_results(image_id: int, boxes, scores, labels, label_to_category_id: list[int]) -> list[dict]:
    """COCO result dicts of one image's detections: XYXY ``boxes`` become ``[x, y, w, h]`` (3 decimals),
    labels their category ids (what the evaluator and ``predict.py save=coco`` write)."""
    out = []
    for box, score, label in zip(boxes, scores, labels):
        x1, y1, x2, y2 = np.asarray(box, np.float32)  # the width and height in float32, as the model's boxes
        out.append({"image_id": image_id, "category_id": label_to_category_id[int(label)],
                    "bbox": [round(float(v), 3) for v in (x1, y1, x2 - x1, y2 - y1)], "score": round(float(score), 5)})
    return out


def score_boxes(gt: PyCOCO, results: list[dict], image_ids: list[int], backend: str) -> tuple[object, str]:
    """Evaluate, accumulate and summarise ``results`` (COCO result dicts) against the ground truth ``gt``
    on ``image_ids`` with ``backend``: the evaluator (``stats``, ``eval["precision"]``) and its summary."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        if backend == "faster-coco-eval":
            from faster_coco_eval import COCO as FastCOCO
            from faster_coco_eval import COCOeval_faster

            fast_gt = FastCOCO()
            fast_gt.dataset = gt.dataset
            fast_gt.createIndex()
            coco_eval = COCOeval_faster(fast_gt, fast_gt.loadRes(results), "bbox", print_function=print)
        else:
            coco_eval = COCOeval(gt, gt.loadRes(results), "bbox")
        coco_eval.params.imgIds = list(image_ids)
        buffer.truncate(0)
        buffer.seek(0)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval, buffer.getvalue().rstrip()


def per_class_ap(coco_eval: COCOeval, class_names: list[str]) -> dict[str, float]:
    """AP@[.5:.95] per class (percent) from the accumulated precision array."""
    precision = coco_eval.eval["precision"]  # (iou, recall, class, area, max_dets)
    out = {}
    for k, name in enumerate(class_names):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[name] = float(np.mean(p) * 100) if p.size else float("nan")
    return out


def pr_curves(coco_eval, class_names: list[str]) -> dict:
    """Precision at COCO's 101 recall points (area all, 100 detections) per class for IoU 0.5, 0.75 and
    the mean over 0.5:0.95; null where a class has no ground truth."""
    p = np.asarray(coco_eval.eval["precision"], dtype=float)[:, :, :, 0, -1]  # (IoU, recall, class)
    p[p < 0] = np.nan
    iou = np.asarray(coco_eval.params.iouThrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: classes without ground truth
        rows = {"0.5": p[np.isclose(iou, 0.5)][0], "0.75": p[np.isclose(iou, 0.75)][0], "0.5:0.95": np.nanmean(p, axis=0)}
    precision = {k: [[None if np.isnan(x) else round(float(x), 5) for x in v[:, c]] for c in range(len(class_names))]
                 for k, v in rows.items()}
    return {"recall": [round(float(r), 4) for r in coco_eval.params.recThrs], "classes": list(class_names),
            "precision": precision}


def format_per_class_table(per_class: dict[str, float], columns: int = 3, title: str = "Per-category bbox AP") -> str:
    cells = [f"{name[:18]:<18} {ap:6.2f}" for name, ap in per_class.items()]
    header = " | ".join([f"{'category':<18} {'AP':>6}"] * min(columns, len(cells)))
    rows = [" | ".join(cells[i:i + columns]) for i in range(0, len(cells), columns)]
    return f"{title}:\n" + "\n".join([header, "-" * len(header), *rows])
