"""How a dataset's record becomes a sample: the image read, the transforms applied, the targets as tensors,
and what an image that fails to load becomes (Detectron2's ``DatasetMapper`` over its dataset dicts).

Samples are dicts: ``image`` (3, H, W) uint8 BGR after ``transforms``, ``gt_boxes`` (G, 4) XYXY float32,
``gt_classes`` (G,) int64, ``image_id``, ``file_name``, and the original ``height``/``width``.

An image that fails to load when read (it was fine, or not looked at, when the dataset loaded) is skipped
by its policy: with ``substitute_bad_images`` (training) the next good image takes its place, otherwise
(evaluation) a stub ``{"image_id", "file_name", "skipped"}`` is returned. Either way the sample carries
``skipped``: the messages, so the caller can count them across loader workers.
"""
from __future__ import annotations

import logging
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from detectres.data.checks import FAIL, DataCheckError
from detectres.data.datasets.base import DetectionDataset
from detectres.data.image_io import ImageFileError
from detectres.data.transforms import apply_transforms

logger = logging.getLogger(__name__)


class DetectionSamples(Dataset):
    """The samples of ``records``, one per image, in the records' image order.

    Args:
        records: the checked records (:class:`DetectionDataset`: COCO, VOC, ...).
        transforms: an albumentations pipeline (see :mod:`detectres.data.transforms`), or None (the
            original image).
        substitute_bad_images: an image that fails to load is replaced by the next one that loads
            (training); otherwise it gives a stub naming it (evaluation).
    """

    def __init__(self, *, records: DetectionDataset, transforms: A.Compose | None = None,
                 substitute_bad_images: bool = False):
        self.records = records
        self.transforms = transforms
        self.substitute_bad_images = substitute_bad_images
        self._bad_indices: dict[int, ImageFileError] = {}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def aspect_ratios(self) -> np.ndarray:
        """Each sample's width / height (the resize keeps it): what the training sampler groups batches by."""
        return self.records.aspect_ratios

    def load_item(self, index: int) -> dict[str, Any]:
        records = self.records
        image_id = records.image_ids[index]
        image = records.read_image(image_id)
        height, width = image.shape[:2]
        boxes, labels = records.annotations(image_id)
        if self.transforms is not None:
            image, boxes, labels = apply_transforms(self.transforms, image, boxes, labels)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "gt_boxes": torch.from_numpy(boxes),
            "gt_classes": torch.from_numpy(labels),
            "image_id": image_id,
            "file_name": records.image_path(image_id),
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
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")  # (so that iterating over the samples ends)
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
                if self.records.report.policies[e.kind] == FAIL:
                    raise DataCheckError(f"{e} [{e.kind}, fatal]") from e
                if i not in self._bad_indices:
                    logger.warning("skipping an image that failed to load: %s [%s, image skipped]", e, e.kind)
                self._bad_indices[i] = e
                skipped.append(f"{e} [{e.kind}, image skipped]")
                if not self.substitute_bad_images:
                    image_id = self.records.image_ids[i]
                    return {"image_id": image_id, "file_name": self.records.image_path(image_id), "skipped": skipped}
                continue
            if skipped:
                item["skipped"] = skipped
            return item
        raise DataCheckError(f"{self.records.name}: every image failed to load; the last: {skipped[-1:]}")
