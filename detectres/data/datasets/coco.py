"""COCO-format detection datasets: one JSON file of images, annotations and categories.

The file is checked entry by entry (see :mod:`detectres.data.checks`); pycocotools indexes the
cleaned records for evaluation. ``iscrowd`` boxes are left out of training targets.
"""
from __future__ import annotations

import json
import os
from typing import Mapping

import albumentations as A

from detectres.data.checks import DataCheckError
from detectres.data.datasets.base import DetectionDataset


def read_coco_json(ann_file: str) -> dict:
    """The parsed annotation file; a missing or malformed file raises, naming it (and the line)."""
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"annotation file not found: {ann_file}")
    try:
        with open(ann_file, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataCheckError(f"{ann_file}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg} "
                             "[malformed_file, fatal: the whole dataset is in this file]") from e
    except UnicodeDecodeError as e:
        raise DataCheckError(f"{ann_file}: not a UTF-8 text file ({e.reason}) [malformed_file, fatal]") from e


class COCODataset(DetectionDataset):
    """A COCO-format dataset: ``image_dir`` holds the files named in ``ann_file``."""

    def __init__(self, *, image_dir: str, ann_file: str, transforms: A.Compose | None = None,
                 checks: Mapping[str, str] | None = None, filter_empty: bool = False):
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"image directory not found: {image_dir}")
        self.image_dir = image_dir
        self.ann_file = ann_file
        super().__init__(name=ann_file, image_root=image_dir, records=read_coco_json(ann_file),
                         transforms=transforms, checks=checks, source_files=[ann_file], filter_empty=filter_empty)
