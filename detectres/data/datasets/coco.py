"""COCO-format detection datasets through pycocotools.

Category ids in the file (any, possibly non-contiguous) map to contiguous labels 0..K-1 in the
order of their ids; ``label_to_category_id`` maps back for results files. ``iscrowd`` boxes are
left out of training targets; images without objects are kept.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from detectres.data.transforms import apply_transforms


class DatasetError(ValueError):
    """A dataset file or annotation that cannot be used; the message names the file and entry."""


def load_coco(ann_file: str) -> COCO:
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"annotation file not found: {ann_file}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(ann_file)
    except Exception as e:  # pycocotools raises bare asserts/KeyErrors on malformed files
        raise DatasetError(f"{ann_file}: not a valid COCO annotation file ({type(e).__name__}: {e})") from e


class COCODataset(Dataset):
    """Items are dicts: ``image`` (3, H, W) uint8 BGR after ``transforms``, ``gt_boxes`` (G, 4) XYXY
    float32, ``gt_classes`` (G,) int64, ``image_id``, ``file_name``, and the original ``height``/``width``."""

    def __init__(self, *, image_dir: str, ann_file: str, transforms: A.Compose | None = None):
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"image directory not found: {image_dir}")
        self.image_dir = image_dir
        self.ann_file = ann_file
        self.coco = load_coco(ann_file)
        self.transforms = transforms
        cats = sorted(self.coco.loadCats(self.coco.getCatIds()), key=lambda c: c["id"])
        if not cats:
            raise DatasetError(f"{ann_file}: no categories")
        self.class_names = [c["name"] for c in cats]
        self.label_to_category_id = [c["id"] for c in cats]
        self.category_id_to_label = {cid: i for i, cid in enumerate(self.label_to_category_id)}
        self.image_ids = sorted(self.coco.getImgIds())
        self.aspect_ratios = [
            self.coco.imgs[i].get("width", 1) / max(1, self.coco.imgs[i].get("height", 1)) for i in self.image_ids
        ]

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, image_id: int) -> str:
        return os.path.join(self.image_dir, self.coco.imgs[image_id]["file_name"])

    def read_image(self, image_id: int) -> np.ndarray:
        path = self.image_path(image_id)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file not found: {path} (image id {image_id} in {self.ann_file})")
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"cannot decode image {path}: the file is corrupt or not an image")
        info = self.coco.imgs[image_id]
        if "height" in info and (info["height"], info["width"]) != image.shape[:2]:
            raise DatasetError(
                f"{path}: image is {image.shape[0]}x{image.shape[1]} (HxW) but {self.ann_file} says "
                f"{info['height']}x{info['width']}"
            )
        return image

    def annotations(self, image_id: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(G, 4) XYXY boxes clipped to the image and (G,) labels, crowd and zero-area boxes left out."""
        boxes, labels = [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            cid = ann.get("category_id")
            if cid not in self.category_id_to_label:
                raise DatasetError(f"{self.ann_file}: annotation {ann.get('id')} has unknown category_id {cid}")
            bbox = ann.get("bbox")
            if bbox is None or len(bbox) != 4 or not all(math.isfinite(float(v)) for v in bbox):
                raise DatasetError(f"{self.ann_file}: annotation {ann.get('id')} has a malformed bbox {bbox}")
            x, y, w, h = (float(v) for v in bbox)
            if w < 0 or h < 0:
                raise DatasetError(
                    f"{self.ann_file}: annotation {ann.get('id')} (image {self.coco.imgs[image_id]['file_name']}) "
                    f"has negative width or height in bbox {bbox}; COCO boxes are [x, y, width, height]"
                )
            if ann.get("iscrowd", 0):
                continue
            x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            if x2 - x1 < 1e-3 or y2 - y1 < 1e-3:
                continue  # zero-area after clipping: nothing to learn from
            boxes.append([x1, y1, x2, y2])
            labels.append(self.category_id_to_label[cid])
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        image = self.read_image(image_id)
        height, width = image.shape[:2]
        boxes, labels = self.annotations(image_id, height, width)
        if self.transforms is not None:
            image, boxes, labels = apply_transforms(self.transforms, image, boxes, labels)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "gt_boxes": torch.from_numpy(boxes),
            "gt_classes": torch.from_numpy(labels),
            "image_id": image_id,
            "file_name": self.image_path(image_id),
            "height": height,
            "width": width,
        }
