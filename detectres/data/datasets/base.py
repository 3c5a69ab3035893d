"""A detection dataset over checked COCO-style records (COCO and VOC both load into this).

Items are dicts: ``image`` (3, H, W) uint8 BGR after ``transforms``, ``gt_boxes`` (G, 4) XYXY
float32, ``gt_classes`` (G,) int64, ``image_id``, ``file_name``, and the original ``height``/``width``.
Category ids (any, possibly non-contiguous) map to contiguous labels 0..K-1 in the order of their
ids; ``label_to_category_id`` maps back. Crowd boxes (and VOC "difficult" ones unless kept) are left
out of training targets; images without objects are kept.

An image that fails to load when read (it was fine, or not looked at, when the dataset loaded) is
skipped by its policy: with ``substitute_bad_images`` (training) the next good image takes its place,
otherwise (evaluation) a stub ``{"image_id", "file_name", "skipped"}`` is returned. Either way the
item carries ``skipped``: the messages, so the caller can count them across loader workers.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
from collections import Counter
from typing import Any, Mapping, Sequence

import albumentations as A
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from tqdm import tqdm

from detectres.data.checks import DROP, FAIL, FIX, SKIP, DataCheckError, DataReport, scan_level
from detectres.data.image_io import ImageFileError, image_file_size, read_image_file
from detectres.data.records import clean_records, drop_images, xywh_to_xyxy
from detectres.data.transforms import apply_transforms

logger = logging.getLogger(__name__)


def coco_index(records: dict) -> COCO:
    """A pycocotools index over in-memory records (what COCOeval needs as ground truth)."""
    coco = COCO()
    coco.dataset = records
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def nothing_to_train_on(name: str, report: DataReport) -> str:
    """Why no image kept a usable box: the data checks' drops counted by kind, and the key that fixes the
    usual cause (categories the class list does not name)."""
    dropped = Counter(p.kind for p in report.problems if p.action in (DROP, SKIP))
    causes = ", ".join(f"{n} {kind}" for kind, n in dropped.most_common())
    unknown = sorted({m.group(1) for p in report.problems if p.kind == "unknown_category"
                      for m in [re.search(r"category (.+) is not in the class list", p.detail)] if m})
    if unknown:
        hint = (f"the objects' categories {', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''} are not in "
                "the class list: set data.class_names to the dataset's classes")
    else:
        hint = "filter_empty=false keeps images without boxes"
    return (f"{name}: no image has a usable box, so filter_empty=true leaves nothing to train on "
            f"(dropped by the data checks: {causes or 'nothing; the images have no boxes'}); {hint}")


class DetectionDataset(Dataset):
    """Checks ``records`` (see :mod:`detectres.data.checks` for ``checks``), then serves items.

    Args:
        name: how the report and messages name this dataset (e.g. the annotation file).
        source_files: the annotation / list files the records came from (what :meth:`identity` names).
        image_root: the folder that ``file_name`` entries are relative to.
        records: COCO-style ``{"images", "annotations", "categories"}``.
        transforms: an albumentations pipeline (see :mod:`detectres.data.transforms`), or None.
        checks: ``{"scan": exists|header|decode, <problem kind>: <policy>, ...}``.
        ignore_flag: an annotation key (e.g. "difficult") whose true value leaves the box out of
            training targets, like ``iscrowd``.
        filter_empty: drop the images without a usable box (none, or only crowd / ``ignore_flag`` ones),
            Detectron2's ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` (its training default); ``dropped_empty``
            counts them.
    """

    def __init__(self, *, name: str, image_root: str, records: dict, transforms: A.Compose | None = None,
                 checks: Mapping[str, str] | None = None, ignore_flag: str | None = None,
                 source_files: Sequence[str] = (), filter_empty: bool = False):
        checks = dict(checks or {})
        self.source_files = [os.path.realpath(p) for p in source_files]
        requested_scan = checks.pop("scan", "exists")
        self.report = DataReport(name, checks)
        self.name = name
        self.image_root = image_root
        self.transforms = transforms
        self.ignore_flag = ignore_flag
        self.substitute_bad_images = False
        self._bad_indices: dict[int, ImageFileError] = {}
        records = clean_records(records, source=name, image_root=image_root, report=self.report)
        records = self._scan_files(records, scan_level(requested_scan, self.report.policies))
        self.report.raise_if_fatal()
        self.dropped_empty = 0
        if filter_empty and records["images"]:
            records, self.dropped_empty = self.without_empty_images(records)
            if not records["images"]:
                raise DataCheckError(nothing_to_train_on(name, self.report))
        if not records["images"]:
            raise DataCheckError(f"{name}: no usable images\n{self.report.summary()}")
        self.coco = coco_index(records)
        cats = records["categories"]
        self.class_names = [c["name"] for c in cats]
        self.label_to_category_id = [c["id"] for c in cats]
        self.category_id_to_label = {cid: i for i, cid in enumerate(self.label_to_category_id)}
        self.image_ids = sorted(self.coco.imgs)
        self.aspect_ratios = [self.coco.imgs[i]["width"] / self.coco.imgs[i]["height"] for i in self.image_ids]

    # -- checks at load -------------------------------------------------------------------------
    def _scan_files(self, records: dict, level: str) -> dict:
        """Look at every image file (``level`` exists/header/decode) and apply the policies."""
        images = records["images"]
        skip, file_sizes = set(), {}
        progress = tqdm(images, desc=f"checking images ({level})", unit="img", leave=False,
                        disable=level == "exists" or len(images) < 200, dynamic_ncols=True)
        for image in progress:
            path = self.image_path_of(image)
            try:
                if level == "exists":
                    if not os.path.isfile(path):
                        raise ImageFileError("missing_image", path, "image file not found")
                    continue
                hw = image_file_size(path) if level == "header" else read_image_file(path).shape[:2]
            except ImageFileError as e:
                self.report.add(e.kind, self._where(image), e.detail)
                skip.add(image["id"])
                continue
            if hw != (image["height"], image["width"]):
                detail = size_mismatch_detail(hw, image)
                if self.report.add("size_mismatch", self._where(image), detail) == FIX:
                    file_sizes[image["id"]] = hw
                else:
                    skip.add(image["id"])
        rescale_to_file_sizes(records, file_sizes)
        return drop_images(records, skip)

    def without_empty_images(self, records: dict) -> tuple[dict, int]:
        """``records`` without the images that have no training box, and how many those were."""
        usable = {a["image_id"] for a in records["annotations"] if not self.ignored(a)}
        empty = {img["id"] for img in records["images"]} - usable
        return drop_images(records, empty), len(empty)

    def ignored(self, ann: dict) -> bool:
        """Whether an annotation is left out of the training targets (crowd, or ``ignore_flag`` set)."""
        return bool(ann.get("iscrowd", 0) or (self.ignore_flag and ann.get(self.ignore_flag, 0)))

    def _where(self, image: dict) -> str:
        return f"{self.image_path_of(image)} (image id {image['id']})"

    def identity(self) -> dict:
        """What a resumed run checks it still trains on: a digest of the records it trains on (each image's
        file and size, each box, class and flag, the class list, what is ignored), wherever the files
        live; the counts and source files name it in messages."""
        digest = hashlib.sha256(json.dumps([self.ignore_flag, self.class_names]).encode())
        for image_id in self.image_ids:
            info = self.coco.imgs[image_id]
            digest.update(f"{info['file_name']}|{info['width']}|{info['height']}".encode())
            for ann in self.coco.imgToAnns.get(image_id, []):
                flags = (ann.get("iscrowd", 0), ann.get(self.ignore_flag, 0) if self.ignore_flag else 0)
                digest.update(f"{ann['category_id']}|{ann['bbox']}|{flags}".encode())
        return {"digest": digest.hexdigest(), "images": len(self), "annotations": len(self.coco.anns),
                "files": self.source_files}

    # -- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path_of(self, image: dict) -> str:
        return os.path.join(self.image_root, image["file_name"])

    def image_path(self, image_id: int) -> str:
        return self.image_path_of(self.coco.imgs[image_id])

    def read_image(self, image_id: int) -> np.ndarray:
        """HxWx3 uint8 BGR; raises :class:`ImageFileError` (``kind`` names the problem)."""
        info = self.coco.imgs[image_id]
        image = read_image_file(self.image_path(image_id))
        if image.shape[:2] != (info["height"], info["width"]):
            raise ImageFileError("size_mismatch", self.image_path(image_id), size_mismatch_detail(image.shape, info))
        return image

    def annotations(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(G, 4) XYXY training boxes and (G,) labels: crowd (and ``ignore_flag``) boxes left out."""
        boxes, labels = [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if self.ignored(ann):
                continue
            boxes.append(xywh_to_xyxy(ann["bbox"]))
            labels.append(self.category_id_to_label[ann["category_id"]])
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)

    def load_item(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        image = self.read_image(image_id)
        height, width = image.shape[:2]
        boxes, labels = self.annotations(image_id)
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

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        """``index``, or ``(index, seed)`` from a training sampler: the seed fixes this item's random
        transforms and is passed on as ``sample_seed`` (the model seeds its anchor/RoI sampling with it)."""
        seed = None
        if isinstance(index, tuple):
            index, seed = index
            if self.transforms is not None:
                self.transforms.set_random_seed(seed)
        item = self.load_first_good(index)
        if seed is not None and "image" in item:
            item["sample_seed"] = seed
        return item

    def load_first_good(self, index: int) -> dict[str, Any]:
        """Item ``index``, or (with ``substitute_bad_images``) the next one that loads."""
        skipped: list[str] = []
        for step in range(len(self)):
            i = (index + step) % len(self)
            if i in self._bad_indices and self.substitute_bad_images:
                continue
            try:
                if i in self._bad_indices:
                    raise self._bad_indices[i]  # evaluation: the same stub again, without re-reading
                item = self.load_item(i)
            except ImageFileError as e:
                if self.report.policies[e.kind] == FAIL:
                    raise DataCheckError(f"{e} [{e.kind}, fatal]") from e
                if i not in self._bad_indices:
                    logger.warning("skipping an image that failed to load: %s [%s, image skipped]", e, e.kind)
                self._bad_indices[i] = e
                skipped.append(f"{e} [{e.kind}, image skipped]")
                if not self.substitute_bad_images:
                    image_id = self.image_ids[i]
                    return {"image_id": image_id, "file_name": self.image_path(image_id), "skipped": skipped}
                continue
            if skipped:
                item["skipped"] = skipped
            return item
        raise DataCheckError(f"{self.name}: every image failed to load; the last: {skipped[-1:]}")


def size_mismatch_detail(file_hw: tuple[int, ...], image: dict) -> str:
    return f"the file is {file_hw[0]}x{file_hw[1]} (HxW) but the annotation says {image['height']}x{image['width']}"


def rescale_to_file_sizes(records: dict, file_sizes: dict[int, tuple[int, int]]) -> None:
    """Scale the boxes of each image in ``file_sizes`` (id -> file height, width) from its annotated
    size to the file's, in one pass over the annotations (the ``fix`` for size_mismatch)."""
    if not file_sizes:
        return
    scales = {}
    for image in records["images"]:
        if image["id"] in file_sizes:
            height, width = file_sizes[image["id"]]
            scales[image["id"]] = (width / image["width"], height / image["height"])
            image["height"], image["width"] = height, width
    for ann in records["annotations"]:
        if ann["image_id"] in scales:
            sx, sy = scales[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            ann["bbox"] = [x * sx, y * sy, w * sx, h * sy]
