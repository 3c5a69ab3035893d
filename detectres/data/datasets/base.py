"""A dataset's records: COCO-style annotations checked, indexed and named (COCO and VOC both load into
this). How a record becomes a training or evaluation sample (reading, transforms, what a bad image
becomes) is :class:`detectres.data.samples.DetectionSamples`, as Detectron2 keeps its dataset catalog
apart from its mapper.

Category ids (any, possibly non-contiguous) map to contiguous labels 0..K-1 in the order of their ids;
``label_to_category_id`` maps back. Crowd boxes (and VOC "difficult" ones unless kept) are left out of
training targets (:meth:`DetectionDataset.annotations`); images without objects are kept unless
``filter_empty``.
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

import numpy as np
from pycocotools.coco import COCO
from tqdm import tqdm

from detectres.data.checks import DROP, FIX, SKIP, DataCheckError, DataReport, scan_level
from detectres.data.image_io import ImageFileError, image_file_size, read_image_file
from detectres.data.records import BoxTable, Records, clean_records
from detectres.utils.logfile import shows_progress_bars

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


class DetectionDataset:
    """Checks ``records`` (see :mod:`detectres.data.checks` for ``checks``), then answers for them: the
    images by id, each image's training boxes and labels, the class list, a pycocotools index, a digest.

    Args:
        name: how the report and messages name this dataset (e.g. the annotation file).
        source_files: the annotation / list files the records came from (what :meth:`identity` names).
        image_root: the folder that ``file_name`` entries are relative to.
        records: COCO-style ``{"images", "annotations", "categories"}``.
        checks: ``{"scan": exists|header|decode, <problem kind>: <policy>, ...}``.
        ignore_flag: an annotation key (e.g. "difficult") whose true value leaves the box out of
            training targets, like ``iscrowd``.
        filter_empty: drop the images without a usable box (none, or only crowd / ``ignore_flag`` ones),
            Detectron2's ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` (its training default); ``dropped_empty``
            counts them.
    """

    def __init__(self, *, name: str, image_root: str, records: dict,
                 checks: Mapping[str, str] | None = None, ignore_flag: str | None = None,
                 source_files: Sequence[str] = (), filter_empty: bool = False):
        checks = dict(checks or {})
        self.source_files = [os.path.realpath(p) for p in source_files]
        requested_scan = checks.pop("scan", "exists")
        self.report = DataReport(name, checks)
        self.name = name
        self.image_root = image_root
        self.ignore_flag = ignore_flag
        if ignore_flag not in (None, "difficult"):
            raise ValueError(f"ignore_flag={ignore_flag!r}: the records carry 'difficult' (and 'iscrowd') only")
        records = self._scan_files(self.checked_records(records), scan_level(requested_scan, self.report.policies))
        self.report.raise_if_fatal()
        self.dropped_empty = 0
        if filter_empty and records.images:
            records, self.dropped_empty = self.without_empty_images(records)
            if not records.images:
                raise DataCheckError(nothing_to_train_on(name, self.report))
        if not records.images:
            raise DataCheckError(f"{name}: no usable images\n{self.report.summary()}")
        self._index(records)

    def _index(self, records: Records) -> None:
        """Images by id, and each image's boxes as one slice of the box table (sorted by image, stable)."""
        self.class_names = [c["name"] for c in records.categories]
        self.label_to_category_id = [c["id"] for c in records.categories]
        self.category_id_to_label = {cid: i for i, cid in enumerate(self.label_to_category_id)}
        self.categories = records.categories
        self.imgs = {im["id"]: im for im in records.images}
        self.image_ids = sorted(self.imgs)
        self._images_in_order = [self.imgs[i] for i in self.image_ids]
        image_of_box = records.boxes.image_ids
        if (image_of_box[1:] < image_of_box[:-1]).any():
            records.boxes = records.boxes.take(np.argsort(image_of_box, kind="stable"))
        self.boxes = records.boxes
        ids = np.asarray(self.image_ids, np.int64)
        self._box_start = np.searchsorted(self.boxes.image_ids, ids, side="left")
        self._box_end = np.searchsorted(self.boxes.image_ids, ids, side="right")
        self._row_of = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self.aspect_ratios = np.array([im["width"] / im["height"] for im in self._images_in_order])
        self._coco = None

    def checked_records(self, records: Any) -> Records:
        """``records`` (COCO-style dicts) checked, every problem in ``self.report``."""
        return clean_records(records, source=self.name, image_root=self.image_root, report=self.report)

    @property
    def coco(self) -> COCO:
        """A pycocotools index over the checked records (made on first use: evaluation's ground truth)."""
        if self._coco is None:
            self._coco = coco_index({"images": self._images_in_order,
                                     "annotations": self.boxes.to_dicts(), "categories": self.categories})
        return self._coco

    # -- checks at load -------------------------------------------------------------------------
    def _scan_files(self, records: Records, level: str) -> Records:
        """Look at every image file (``level`` exists/header/decode) and apply the policies."""
        images = records.images
        skip, file_sizes = set(), {}
        if level == "exists":
            for image in FolderListing().missing(self.image_root, images):
                self.report.add("missing_image", self._where(image), "image file not found")
                skip.add(image["id"])
            return records.without_images(skip)
        progress = tqdm(images, desc=f"checking images ({level})", unit="img", leave=False,
                        disable=len(images) < 200 or not shows_progress_bars(), dynamic_ncols=True)
        for image in progress:
            try:
                path = self.image_path_of(image)
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
        return records.without_images(skip)

    def without_empty_images(self, records: Records) -> tuple[Records, int]:
        """``records`` without the images that have no training box, and how many those were."""
        usable = set(records.boxes.image_ids[~self.ignored(records.boxes)].tolist())
        empty = {img["id"] for img in records.images} - usable
        return records.without_images(empty), len(empty)

    def ignored(self, boxes: BoxTable) -> np.ndarray:
        """Which boxes are left out of the training targets (crowd, or ``ignore_flag`` set)."""
        out = boxes.iscrowd != 0
        if self.ignore_flag and boxes.difficult is not None:
            out |= boxes.difficult != 0
        return out

    def _where(self, image: dict) -> str:
        return f"{self.image_path_of(image)} (image id {image['id']})"

    def identity(self) -> dict:
        """What a resumed run checks it still trains on: a digest of the records it trains on (each image's
        file and size, each box, class and flag, the class list, what is ignored), wherever the files
        live; the counts and source files name it in messages."""
        b, images = self.boxes, self._images_in_order
        digest = hashlib.sha256(json.dumps([self.ignore_flag, self.class_names]).encode())
        digest.update("\0".join([im["file_name"] for im in images]).encode())
        digest.update(np.array([im["width"] for im in images] + [im["height"] for im in images], np.float64))
        for column in (b.image_ids, b.category_ids, b.boxes, self.ignored(b), b.iscrowd):
            digest.update(np.ascontiguousarray(column))
        return {"digest": digest.hexdigest(), "digest_format": 2, "images": len(self), "annotations": len(b),
                "files": self.source_files}

    # -- one image's record ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path_of(self, image: dict) -> str:
        return os.path.join(self.image_root, image["file_name"])

    def image_path(self, image_id: int) -> str:
        return self.image_path_of(self.imgs[image_id])

    def read_image(self, image_id: int) -> np.ndarray:
        """HxWx3 uint8 BGR; raises :class:`ImageFileError` (``kind`` names the problem)."""
        info = self.imgs[image_id]
        image = read_image_file(self.image_path(image_id))
        if image.shape[:2] != (info["height"], info["width"]):
            raise ImageFileError("size_mismatch", self.image_path(image_id), size_mismatch_detail(image.shape, info))
        return image

    def boxes_of(self, image_id: int) -> BoxTable:
        """Every box of the image (crowd and flagged ones included), in file order."""
        row = self._row_of[image_id]
        return self.boxes.take(slice(self._box_start[row], self._box_end[row]))

    def labels_of(self, boxes: BoxTable) -> np.ndarray:
        """(G,) contiguous labels 0..K-1 of the boxes' categories."""
        return np.searchsorted(self.label_to_category_id, boxes.category_ids).astype(np.int64)

    def annotations(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(G, 4) XYXY training boxes and (G,) labels: crowd (and ``ignore_flag``) boxes left out."""
        boxes = self.boxes_of(image_id)
        kept = ~self.ignored(boxes)
        return boxes.xyxy()[kept].astype(np.float32), self.labels_of(boxes)[kept]


class FolderListing:
    """``os.path.isfile`` answered from one listing per folder (a COCO folder of 118k images: one
    ``scandir`` instead of 118k ``stat`` calls)."""

    def __init__(self):
        self.files: dict[str, set[str]] = {}

    def missing(self, root: str, images: list[dict]) -> list[dict]:
        """The image entries whose file ``root/file_name`` is not a file."""
        names = [im["file_name"] for im in images]
        if not root or any("/" in n or os.sep in n for n in names):
            return [im for im, n in zip(images, names) if not self.is_file(root, n)]
        files = self.listing(root)
        return [im for im, n in zip(images, names)  # the few not listed: asked again (case-folding file systems)
                if n not in files and not os.path.isfile(os.path.join(root, n))]

    def listing(self, folder: str) -> set[str]:
        if folder not in self.files:
            try:
                with os.scandir(folder or ".") as entries:
                    self.files[folder] = {e.name for e in entries if e.is_file()}
            except OSError:
                self.files[folder] = set()
        return self.files[folder]

    def is_file(self, root: str, file_name: str) -> bool:
        """Whether ``root/file_name`` is a file (or a link to one)."""
        if "/" in file_name or os.sep in file_name or not root:
            folder, name = os.path.split(os.path.join(root, file_name))
        else:
            folder, name = root, file_name
        return name in self.listing(folder) or os.path.isfile(os.path.join(root, file_name))


def size_mismatch_detail(file_hw: tuple[int, ...], image: dict) -> str:
    return f"the file is {file_hw[0]}x{file_hw[1]} (HxW) but the annotation says {image['height']}x{image['width']}"


def rescale_to_file_sizes(records: Records, file_sizes: dict[int, tuple[int, int]]) -> None:
    """Scale the boxes of each image in ``file_sizes`` (id -> file height, width) from its annotated
    size to the file's (the ``fix`` for size_mismatch), in one pass over the boxes."""
    if not file_sizes:
        return
    ids, scales = [], []
    for image in records.images:
        if image["id"] in file_sizes:
            height, width = file_sizes[image["id"]]
            ids.append(image["id"])
            scales.append((width / image["width"], height / image["height"]))
            image["height"], image["width"] = height, width
    order = np.argsort(ids)
    ids, scales = np.asarray(ids, np.int64)[order], np.asarray(scales)[order]
    where = np.minimum(np.searchsorted(ids, records.boxes.image_ids), len(ids) - 1)
    rows = ids[where] == records.boxes.image_ids
    records.boxes.boxes[rows] *= np.tile(scales[where[rows]], 2)
