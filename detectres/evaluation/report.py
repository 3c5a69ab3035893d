"""What an evaluation leaves for people: ``eval.json``, the summary line, and images of detections."""
from __future__ import annotations

import json
import math
import os

import cv2
import torch

from detectres.utils.file_io import atomic_write_text
from detectres.utils.outputs import refuse_overwriting, write_image
from detectres.utils.visualizer import draw_detections


def write_eval_json(results: dict, path: str) -> None:
    """Numbers in percent; undefined ones (e.g. APl with no large objects) become null, not NaN. The
    precision-recall curves (COCO) go beside it, into ``pr_curves.json``, and the confusion matrix with the
    threshold curves into ``confusion_matrix.json``; ``best_f1_threshold`` stays in eval.json."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return None if isinstance(v, float) and math.isnan(v) else v

    beside = {"curves": "pr_curves.json", "confusion": "confusion_matrix.json"}
    atomic_write_text(json.dumps(clean({k: v for k, v in results.items() if k not in beside}), indent=2), path)
    for key, name in beside.items():
        if results.get(key):
            atomic_write_text(json.dumps(results[key]), os.path.join(os.path.dirname(path), name))


def print_summary(results: dict) -> None:
    keys = [k for k in ("AP", "AP50", "AP75", "APs", "APm", "APl") if k in results]
    print("bbox | " + " | ".join(f"{k:>6}" for k in keys))
    print("     | " + " | ".join(f"{results[k]:6.2f}" for k in keys))


@torch.no_grad()
def draw_dataset_predictions(model, dataset, out_dir: str, count: int, score_thresh: float = 0.5) -> list[str]:
    """Draw ``model.inference``'s detections on the first ``count`` samples of ``dataset`` (``DetectionSamples``)
    into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    model.eval()
    paths = []
    for i in range(min(count, len(dataset))):
        item = dataset[i]
        if "image" not in item:  # failed to load (already reported)
            continue
        out = model.inference([item])[0]
        image = cv2.imread(item["file_name"], cv2.IMREAD_COLOR)
        drawn = draw_detections(image, out["pred_boxes"].cpu().numpy(), out["scores"].cpu().numpy(),
                                out["pred_classes"].cpu().numpy(), dataset.records.class_names, score_thresh)
        path = os.path.join(out_dir, os.path.splitext(os.path.basename(item["file_name"]))[0] + ".jpg")
        refuse_overwriting([path], [item["file_name"]], "runtime.output_dir")
        paths.append(write_image(path, drawn))
    print(f"drew detections (score >= {score_thresh}) on {len(paths)} images in {out_dir}")
    return paths
