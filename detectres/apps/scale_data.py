"""A COCO-2017-sized annotation set over real, tiny image files (what ``tools/scale_benchmark.py`` loads).

Each image entry has COCO's fields (licence, URLs, capture date) and each annotation a polygon, so the
JSON is about as large per box as ``instances_train2017.json`` (118,287 images and 866,951 boxes make
about 350 MB). Every image file is one 64x48 JPEG hard-linked under each name (copied where links are
not possible), so a stat or a decode of any of them is real and the folder costs one file of disk.
"""
from __future__ import annotations

import json
import os

import cv2
import numpy as np

from detectres.data.coco_names import COCO_CLASSES

try:
    from orjson import dumps
except ImportError:  # the same bytes, slower
    def dumps(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

WIDTH, HEIGHT = 64, 48
BOXES_PER_IMAGE = 866_951 / 118_287   # COCO 2017 train
POLYGON_POINTS = 20                  # about COCO's mean annotation size in bytes
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]  # COCO's gaps


def tiny_image(path: str) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    if not cv2.imwrite(path, image):
        raise OSError(f"cannot write {path}")


def link_images(image_dir: str, names: list[str]) -> None:
    """Every name in ``names`` as a hard link to one tiny JPEG in ``image_dir``."""
    os.makedirs(image_dir, exist_ok=True)
    first = os.path.join(image_dir, names[0])
    if not os.path.exists(first):
        tiny_image(first)
    for name in names[1:]:
        path = os.path.join(image_dir, name)
        if not os.path.exists(path):
            try:
                os.link(first, path)
            except OSError:
                tiny_image(path)


def image_entry(image_id: int, split: str) -> dict:
    name = f"{image_id:012d}.jpg"
    return {"license": 1 + image_id % 8, "file_name": name,
            "coco_url": f"http://images.cocodataset.org/{split}/{name}", "height": HEIGHT, "width": WIDTH,
            "date_captured": f"2013-11-{1 + image_id % 28:02d} {image_id % 24:02d}:18:45",
            "flickr_url": f"http://farm{1 + image_id % 9}.staticflickr.com/{image_id % 9000}/{image_id}_z.jpg",
            "id": image_id}


def annotations_for(rng: np.random.Generator, image_ids: np.ndarray) -> list[dict]:
    """About :data:`BOXES_PER_IMAGE` boxes per image (1% crowd), each with a polygon inside its box."""
    counts = rng.poisson(BOXES_PER_IMAGE, len(image_ids))
    n = int(counts.sum())
    owner = np.repeat(image_ids, counts)
    w = rng.uniform(2, WIDTH / 2, n).round(2)
    h = rng.uniform(2, HEIGHT / 2, n).round(2)
    x = (rng.uniform(0, 1, n) * (WIDTH - w)).round(2)
    y = (rng.uniform(0, 1, n) * (HEIGHT - h)).round(2)
    cats = np.asarray(COCO_CATEGORY_IDS)[rng.integers(0, len(COCO_CATEGORY_IDS), n)]
    crowd = rng.random(n) < 0.01
    angles = np.sort(rng.uniform(0, 2 * np.pi, (n, POLYGON_POINTS)), axis=1)
    px = (x[:, None] + w[:, None] * (0.5 + 0.5 * np.cos(angles))).round(2)
    py = (y[:, None] + h[:, None] * (0.5 + 0.5 * np.sin(angles))).round(2)
    polygons = np.stack([px, py], axis=2).reshape(n, -1).tolist()
    return [{"segmentation": [polygons[i]], "area": round(float(w[i] * h[i]) * 0.78, 4),
             "iscrowd": int(crowd[i]), "image_id": int(owner[i]),
             "bbox": [float(x[i]), float(y[i]), float(w[i]), float(h[i])],
             "category_id": int(cats[i]), "id": i + 1} for i in range(n)]


def write_split(root: str, split: str, num_images: int, seed: int) -> str:
    """``root/annotations/instances_<split>.json`` and ``root/<split>/``; returns the JSON's path
    (kept as it is when it exists: the set is deterministic in ``num_images`` and ``seed``)."""
    ann_file = os.path.join(root, "annotations", f"instances_{split}.json")
    image_ids = np.arange(1, num_images + 1) * 3 + seed  # sparse ids, as COCO's are
    link_images(os.path.join(root, split), [f"{i:012d}.jpg" for i in image_ids])
    if os.path.exists(ann_file):
        return ann_file
    rng = np.random.default_rng(seed)
    records = {"info": {"description": f"detectres scale set ({num_images} images)", "year": 2017},
               "licenses": [{"id": i, "name": f"licence {i}", "url": ""} for i in range(1, 9)],
               "images": [image_entry(int(i), split) for i in image_ids],
               "annotations": annotations_for(rng, image_ids),
               "categories": [{"supercategory": "object", "id": i, "name": n}
                              for i, n in zip(COCO_CATEGORY_IDS, COCO_CLASSES)]}
    os.makedirs(os.path.dirname(ann_file), exist_ok=True)
    tmp = ann_file + ".part"
    with open(tmp, "wb") as f:
        f.write(dumps(records))
    os.replace(tmp, ann_file)
    return ann_file
