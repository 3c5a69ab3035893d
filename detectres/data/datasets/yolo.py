"""YOLO-format datasets (the Ultralytics layout), converted to COCO-style records for the shared checks.

    ROOT/data.yaml                 names: [a, b, ...] or {0: a, 1: b, ...}; train: ...; val: ...; path: (optional)
    ROOT/images/train/x.jpg        (any folders: a split is a folder, a list file, or a list of either)
    ROOT/labels/train/x.txt        one ``class cx cy w h`` line per box, normalised to [0, 1]

A split entry is relative to ``path`` (itself relative to ROOT when not absolute; ROOT when absent). A list
file names one image per line, relative to the list file's folder. An image's label file is its path with
the last ``/images/`` replaced by ``/labels/`` and the suffix by ``.txt``; an image without one has no
objects. A line of more than five numbers is a polygon (Ultralytics' segment format): its bounding box is
used. Pixel coordinates are rounded to 1e-3 px. Class ids are 0-based; category ``k`` becomes COCO
category id ``k + 1``.

Problems stay in the records for the checks to report and apply their policies: a class id outside
``names`` is ``unknown_category``, a line that is not numbers (or not 5, or an odd count) is
``malformed_box``, a coordinate outside [0, 1] is ``box_outside_image`` (clipped by ``fix``), an image
whose size cannot be read is that image-file problem (``missing_image``, ``unreadable_image``, ...).
"""
from __future__ import annotations

import glob
import os
from typing import Any, Literal, Mapping

import yaml
from tqdm import tqdm

from detectres.data.datasets.base import DetectionDataset
from detectres.data.image_io import ImageFileError, image_file_size
from detectres.utils.logfile import shows_progress_bars

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")


class YOLOFormatError(ValueError):
    """A data.yaml that is missing, does not parse, or lacks what a split needs."""


def read_data_yaml(root: str) -> dict:
    """ROOT/data.yaml as a dict, with ``names`` as a list in class order."""
    path = os.path.join(root, "data.yaml")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"YOLO data file not found: {path} (data.root must be the folder holding data.yaml)")
    try:
        with open(path, encoding="utf-8") as f:
            spec = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise YOLOFormatError(f"{path}: not YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise YOLOFormatError(f"{path}: nested too deeply to be a YOLO data.yaml") from None
    if not isinstance(spec, dict):
        raise YOLOFormatError(f"{path}: expected a mapping with names, train and val")
    spec["names"] = class_names_of(spec.get("names"), path)
    return spec


def class_names_of(names: Any, path: str) -> list[str]:
    """``names`` as a list: a list as it is, or an id -> name mapping with ids 0..K-1."""
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise YOLOFormatError(f"{path}: names ids {sorted(names)} are not 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, int)) for n in names):
        raise YOLOFormatError(f"{path}: names must be a non-empty list of class names or an id -> name mapping")
    return [str(n) for n in names]


def dataset_folder(root: str, spec: dict) -> str:
    base = spec.get("path")
    return root if not base else base if os.path.isabs(str(base)) else os.path.join(root, str(base))


def split_images(root: str, spec: dict, split: str) -> list[str]:
    """The image paths of ``split`` (``train``, ``val`` or ``test``), sorted within each listed entry."""
    entries = spec.get(split)
    if not entries:
        raise YOLOFormatError(f"{os.path.join(root, 'data.yaml')}: no '{split}' entry")
    base = dataset_folder(root, spec)
    paths: list[str] = []
    for entry in entries if isinstance(entries, list) else [entries]:
        where = os.path.join(base, str(entry))
        if os.path.isdir(where):
            paths += sorted(p for p in glob.glob(os.path.join(where, "**", "*"), recursive=True)
                            if p.lower().endswith(IMAGE_SUFFIXES))
        elif os.path.isfile(where):
            with open(where, encoding="utf-8") as f:
                folder = os.path.dirname(where)
                paths += [os.path.normpath(os.path.join(folder, line.strip())) for line in f if line.strip()]
        else:
            raise FileNotFoundError(f"YOLO split {split}: {where} is neither a folder nor a list file")
    return paths


def label_path(image_path: str) -> str:
    """``.../images/.../x.jpg`` -> ``.../labels/.../x.txt`` (Ultralytics' rule)."""
    head, sep, tail = image_path.rpartition(f"{os.sep}images{os.sep}")
    return os.path.splitext(f"{head}{os.sep}labels{os.sep}{tail}" if sep else image_path)[0] + ".txt"


def parse_label_line(text: str, width: int, height: int) -> tuple[Any, Any]:
    """(class id or the raw token, COCO ``[x, y, w, h]`` in pixels or None) of one label line."""
    fields = text.split()
    try:
        cls: Any = int(fields[0])
    except ValueError:
        cls = fields[0]
    try:
        values = [float(v) for v in fields[1:]]
    except ValueError:
        return cls, None
    if len(values) == 4:
        cx, cy, w, h = values
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    elif len(values) >= 6 and len(values) % 2 == 0:  # a polygon: its bounding box
        xs, ys = values[0::2], values[1::2]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    else:
        return cls, None
    # to 1e-3 px: what 6 decimals carry on images up to 1000 px, so boxes annotated in whole, half or hundredth
    # pixels come back exactly from a YOLO copy (the same records, so the same training)
    return cls, [round(v, 3) for v in (x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height)]


def image_annotations(label_file: str, image_id: int, width: int, height: int, num_classes: int,
                      first_id: int) -> list[dict]:
    """The annotations of one label file (none when the file is absent: an image without objects)."""
    if not os.path.isfile(label_file):
        return []
    with open(label_file, encoding="utf-8") as f:
        lines = [(n, line.strip()) for n, line in enumerate(f, start=1) if line.strip()]
    annotations = []
    for n, text in lines:
        cls, bbox = parse_label_line(text, width, height)
        known = isinstance(cls, int) and 0 <= cls < num_classes
        annotations.append({"id": first_id + len(annotations), "image_id": image_id,
                            "category_id": cls + 1 if known else None, "category_name": str(cls),
                            "bbox": bbox if bbox is not None else text, "iscrowd": 0,
                            "source": f"{label_file}: line {n} ({text!r})"})
    return annotations


def yolo_records(root: str, split: str) -> tuple[dict, str]:
    """COCO-style records of ``split`` and the image folder their file names are relative to."""
    spec = read_data_yaml(root)
    names, paths = spec["names"], split_images(root, spec, split)
    image_root = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else dataset_folder(root, spec)
    images, annotations = [], []
    for image_id, path in enumerate(tqdm(paths, desc=f"reading YOLO labels ({split})", unit="img", leave=False,
                                         disable=len(paths) < 500 or not shows_progress_bars(), dynamic_ncols=True), start=1):
        image = {"id": image_id, "file_name": os.path.relpath(path, image_root), "source": f"{path} (image id {image_id})"}
        images.append(image)
        try:
            image["height"], image["width"] = image_file_size(path)
        except ImageFileError as e:
            image["file_problem"] = (e.kind, e.detail)
            continue
        annotations += image_annotations(label_path(path), image_id, image["width"], image["height"], len(names),
                                         len(annotations) + 1)
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}, image_root


class YOLODataset(DetectionDataset):
    """A YOLO-format split: ``root`` holds ``data.yaml``; ``split`` is ``train``, ``val`` or ``test``."""

    def __init__(self, *, root: str, split: Literal["train", "val", "test"], checks: Mapping[str, str] | None = None,
                 filter_empty: bool = False):
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: one of {', '.join(SPLITS)}")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"YOLO root not found: {root} (the folder holding data.yaml)")
        self.root, self.split = root, split
        records, image_root = yolo_records(root, split)
        super().__init__(name=f"{os.path.join(root, 'data.yaml')} [{split}]", image_root=image_root, records=records,
                         checks=checks, source_files=[os.path.join(root, "data.yaml")], filter_empty=filter_empty)
