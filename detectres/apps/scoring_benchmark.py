"""COCO scoring speed (``tools/scoring_benchmark.py``): faster-coco-eval against pycocotools on a
synthetic COCO-val-sized result set, with the 12 summary numbers of both.

The set: ``--images`` images (640x480) over ``--classes`` categories, about 7 ground-truth boxes per
image (sizes spanning small, medium and large; 8% crowd; every 7th image without annotations), and
detections made from the ground truth (jittered, some with the wrong class, 15% missed) plus
``--false-per-image`` random false positives. Defaults: 5,000 images, ~37k boxes, ~440k detections.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import time

import numpy as np
from pycocotools.coco import COCO

from detectres.evaluation.coco import BACKENDS, STAT_KEYS, score_boxes


def random_ground_truth(rng: np.random.Generator, *, images: int, classes: int, max_boxes: int = 17) -> dict:
    """A COCO annotation dict: 640x480 images, 1..``max_boxes`` - 1 boxes on six images of seven."""
    out = {"images": [], "annotations": [], "categories": [{"id": 3 * k + 1, "name": f"c{k}"} for k in range(classes)]}
    for i in range(1, images + 1):
        out["images"].append({"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"})
        if i % 7 == 0:
            continue
        for _ in range(int(rng.integers(1, max_boxes))):
            w, h = float(rng.uniform(4, 300)), float(rng.uniform(4, 200))
            out["annotations"].append({"id": len(out["annotations"]) + 1, "image_id": i, "area": w * h,
                                       "category_id": 3 * int(rng.integers(0, classes)) + 1,
                                       "iscrowd": int(rng.random() < 0.08),
                                       "bbox": [float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h)), w, h]})
    return out


def noisy_detections(gt: dict, rng: np.random.Generator, *, false_per_image: int) -> list[dict]:
    """Ground-truth boxes jittered (10% with a wrong class, 15% dropped) plus random false positives."""
    cats = [c["id"] for c in gt["categories"]]
    dets = []
    for a in gt["annotations"]:
        if rng.random() < 0.15:
            continue
        x, y, w, h = a["bbox"]
        j = rng.normal(0, 0.08, 4) * [w, h, w, h]
        cat = a["category_id"] if rng.random() > 0.1 else int(rng.choice(cats))
        dets.append({"image_id": a["image_id"], "category_id": cat, "score": float(rng.uniform(0.05, 1.0)),
                     "bbox": [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])]})
    for img in gt["images"]:
        for _ in range(false_per_image):
            w, h = rng.uniform(5, img["width"] / 2), rng.uniform(5, img["height"] / 2)
            dets.append({"image_id": img["id"], "category_id": int(rng.choice(cats)),
                         "score": float(rng.uniform(0.01, 0.9)),
                         "bbox": [rng.uniform(0, img["width"] - w), rng.uniform(0, img["height"] - h), w, h]})
    return dets


def ground_truth_index(dataset: dict) -> COCO:
    gt = COCO()
    gt.dataset = json.loads(json.dumps(dataset))  # each engine gets its own copy
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def main(argv: list[str] | None = None) -> dict:
    """Print the set's size, then per engine its seconds and AP / AP50 / AP75; returns the figures."""
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--false-per-image", type=int, default=82)
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    gt = random_ground_truth(rng, images=a.images, classes=a.classes)
    dets = noisy_detections(gt, rng, false_per_image=a.false_per_image)
    print(f"{len(gt['images'])} images, {len(gt['annotations'])} boxes, {len(dets)} detections")
    figures = {}
    for backend in BACKENDS:
        gt_index, results = ground_truth_index(gt), json.loads(json.dumps(dets))
        t0 = time.perf_counter()
        coco_eval, _ = score_boxes(gt_index, results, [img["id"] for img in gt["images"]], backend)
        seconds = time.perf_counter() - t0
        figures[backend] = {"seconds": seconds, **dict(zip(STAT_KEYS, map(float, coco_eval.stats)))}
        print(f"{backend:<17} {seconds:7.2f} s   AP {coco_eval.stats[0]:.4f}  AP50 {coco_eval.stats[1]:.4f}  "
              f"AP75 {coco_eval.stats[2]:.4f}")
    return figures
