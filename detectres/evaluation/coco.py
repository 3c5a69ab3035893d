"""COCO box evaluation with pycocotools: the standard 12 numbers plus per-class AP.

Numbers are reported in percent, with Detectron2's key names (AP, AP50, AP75, APs, APm, APl).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from typing import Iterable

import numpy as np
import torch
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from detectres.data.datasets.coco import COCODataset

logger = logging.getLogger(__name__)

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class COCOEvaluator:
    """Collects detections for a :class:`COCODataset` and scores them against its annotations."""

    def __init__(self, dataset: COCODataset):
        self.dataset = dataset
        self.results: list[dict] = []

    def process(self, inputs: list[dict], outputs: list[dict[str, torch.Tensor]]) -> None:
        to_cat = self.dataset.label_to_category_id
        for x, out in zip(inputs, outputs):
            boxes = out["pred_boxes"].detach().cpu().float()
            boxes[:, 2:] -= boxes[:, :2]  # XYXY -> XYWH
            for box, score, label in zip(boxes.tolist(), out["scores"].tolist(), out["pred_classes"].tolist()):
                self.results.append({"image_id": int(x["image_id"]), "category_id": to_cat[int(label)],
                                     "bbox": [round(v, 3) for v in box], "score": round(float(score), 5)})

    def evaluate(self, output_dir: str | None = None) -> dict:
        """Run COCOeval; print the tables; write ``coco_instances_results.json`` to ``output_dir``.

        Returns ``{"AP": .., "AP50": .., ..., "per_class": {name: AP}}`` (percent).
        """
        if output_dir:
            os.makedirs(output_dir, exist_ok=True)
            with open(os.path.join(output_dir, "coco_instances_results.json"), "w") as f:
                json.dump(self.results, f)
        if not self.results:
            logger.warning("no detections at all: every AP is 0")
            return {**{k: 0.0 for k in STAT_KEYS}, "per_class": {n: 0.0 for n in self.dataset.class_names}}
        gt = self.dataset.coco
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(self.results)
        coco_eval = COCOeval(gt, dt, "bbox")
        coco_eval.params.imgIds = self.dataset.image_ids
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        print(buffer.getvalue().rstrip())
        stats = {k: float(v * 100) if v >= 0 else float("nan") for k, v in zip(STAT_KEYS, coco_eval.stats)}
        stats["per_class"] = per_class_ap(coco_eval, self.dataset.class_names)
        print(format_per_class_table(stats["per_class"]))
        return stats


def per_class_ap(coco_eval: COCOeval, class_names: list[str]) -> dict[str, float]:
    """AP@[.5:.95] per class (percent) from the accumulated precision array."""
    precision = coco_eval.eval["precision"]  # (iou, recall, class, area, max_dets)
    out = {}
    for k, name in enumerate(class_names):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[name] = float(np.mean(p) * 100) if p.size else float("nan")
    return out


def format_per_class_table(per_class: dict[str, float], columns: int = 3) -> str:
    cells = [f"{name[:18]:<18} {ap:6.2f}" for name, ap in per_class.items()]
    header = " | ".join([f"{'category':<18} {'AP':>6}"] * min(columns, len(cells)))
    rows = [" | ".join(cells[i:i + columns]) for i in range(0, len(cells), columns)]
    return "Per-category bbox AP:\n" + "\n".join([header, "-" * len(header), *rows])


@torch.no_grad()
def evaluate_detector(model: torch.nn.Module, loader: Iterable, dataset: COCODataset,
                      output_dir: str | None = None, autocast: bool = False) -> dict:
    """Run ``model`` over ``loader`` and score it with :class:`COCOEvaluator`."""
    from detectres.engine.amp import autocast_context

    was_training = model.training
    model.eval()
    evaluator = COCOEvaluator(dataset)
    model_seconds, images = 0.0, 0
    try:
        for inputs in tqdm(loader, desc="eval", unit="img", leave=False, dynamic_ncols=True):
            t0 = time.perf_counter()
            with autocast_context(model, autocast):
                outputs = model(inputs)
            model_seconds += time.perf_counter() - t0
            images += len(inputs)
            evaluator.process(inputs, outputs)
    finally:
        model.train(was_training)
    results = evaluator.evaluate(output_dir)
    results["seconds_per_image"] = model_seconds / max(1, images)  # the model alone, data loading excluded
    return results
