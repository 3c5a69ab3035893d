"""COCO-format detection datasets: one JSON file of images, annotations and categories.

The file is read with msgspec into only the fields detection uses (a polygon is skipped, never built),
then checked all at once (see :mod:`detectres.data.checks`); a file whose entries are not the types
COCO writes is read again with Python's reader, so the per-entry checks can name what is wrong. The
checked records of a large file are cached (:mod:`detectres.data.record_cache`), so a later run and
every torchrun rank read them instead. ``iscrowd`` boxes are left out of training targets.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import msgspec

from detectres.config.paths import not_installed_hint
from detectres.data.checks import DataCheckError
from detectres.data.datasets.base import DetectionDataset
from detectres.data.record_cache import cached_records, read_bytes as read_file
from detectres.data.records import Records, check_categories, clean_records


class ImageRow(msgspec.Struct, gc=False):
    id: Any = None
    file_name: Any = None
    width: Any = None
    height: Any = None


class AnnotationRow(msgspec.Struct, gc=False):
    id: Any = None
    image_id: Any = None
    category_id: Any = None
    bbox: Any = None
    iscrowd: Any = None
    area: Any = None


class CocoFile(msgspec.Struct):
    images: list[ImageRow] | msgspec.UnsetType = msgspec.UNSET
    annotations: list[AnnotationRow] | msgspec.UnsetType = msgspec.UNSET
    categories: Any = msgspec.UNSET


class CategoriesOnly(msgspec.Struct):
    categories: Any = None


def read_bytes(ann_file: str) -> bytes:
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"annotation file not found: {ann_file}{not_installed_hint(ann_file)}")
    return read_file(ann_file)


def parse_json(raw: bytes, ann_file: str) -> Any:
    """Python's reader, whose errors name the line and column."""
    try:
        return json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise DataCheckError(f"{ann_file}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg} "
                             "[malformed_file, fatal: the whole dataset is in this file]") from e
    except UnicodeDecodeError as e:
        raise DataCheckError(f"{ann_file}: not a UTF-8 text file ({e.reason}) [malformed_file, fatal]") from e
    except RecursionError:
        raise DataCheckError(f"{ann_file}: JSON nested too deeply to be COCO annotations [malformed_file, fatal]") \
            from None


def read_coco_json(ann_file: str, raw: list[bytes] | None = None) -> dict:
    """The annotation file as COCO-style records: image entries as dicts, annotations as rows with the
    fields detection reads. A missing or malformed file raises, naming it (and the line). ``raw``: the
    file's bytes already read, in a list this function empties (so they are freed once decoded)."""
    raw = raw or [read_bytes(ann_file)]
    try:
        top = msgspec.json.decode(raw[0], type=CocoFile)
    except (msgspec.DecodeError, msgspec.ValidationError):  # NaN, odd types, a top level that is not an object
        return parse_json(raw.pop(), ann_file)
    raw.clear()
    out = {k: getattr(top, k) for k in ("images", "annotations", "categories") if getattr(top, k) is not msgspec.UNSET}
    if isinstance(out.get("images"), list):
        out["images"] = [{"id": r.id, "file_name": r.file_name, "width": r.width, "height": r.height}
                         for r in out["images"]]
    return out


def read_categories(ann_file: str) -> list[dict]:
    """The file's category list, sorted by id (the rest of the file is skipped, not built)."""
    raw = read_bytes(ann_file)
    try:
        categories = msgspec.json.decode(raw, type=CategoriesOnly).categories
    except (msgspec.DecodeError, msgspec.ValidationError):
        categories = (parse_json(raw, ann_file) or {}).get("categories")
    return check_categories(categories, ann_file)


class COCODataset(DetectionDataset):
    """A COCO-format dataset: ``image_dir`` holds the files named in ``ann_file``."""

    def __init__(self, *, image_dir: str, ann_file: str,
                 checks: Mapping[str, str] | None = None, filter_empty: bool = False):
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"image directory not found: {image_dir}{not_installed_hint(image_dir)}")
        self.image_dir = image_dir
        self.ann_file = ann_file
        super().__init__(name=ann_file, image_root=image_dir, records=None, checks=checks,
                         source_files=[ann_file], filter_empty=filter_empty)

    def checked_records(self, records: Any) -> Records:
        """The checked records of ``ann_file``, from the record cache when this content was checked before."""
        if not os.path.isfile(self.ann_file):
            raise FileNotFoundError(f"annotation file not found: {self.ann_file}{not_installed_hint(self.ann_file)}")
        return cached_records(self.ann_file, key=[self.name, os.path.realpath(self.image_root), self.report.policies],
                              report=self.report,
                              check=lambda raw: clean_records(read_coco_json(self.ann_file, raw), source=self.name,
                                                              image_root=self.image_root, report=self.report))
