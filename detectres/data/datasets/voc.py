"""PASCAL VOC datasets in the devkit layout, converted to COCO-style records for the shared checks.

    ROOT/VOC2007/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/{train,val,trainval,test}.txt}
    ROOT/VOC2012/...

``image_sets`` such as ``["VOC2007/trainval", "VOC2012/trainval"]`` are concatenated ("07+12").
VOC boxes are 1-based inclusive pixel indices; like Detectron2 they become ``[xmin - 1, ymin - 1,
xmax, ymax]`` in continuous coordinates, in which plain IoU equals the devkit's "+1" IoU.
``difficult`` objects are kept in the records (evaluation ignores them) and left out of training
targets unless ``keep_difficult``.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Annotated, Mapping, Sequence

from tqdm import tqdm

from detectres.config.constraints import ClassNames, MaxLength, NonEmpty
from detectres.data.datasets.base import DetectionDataset
from detectres.utils.logfile import shows_progress_bars

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


class VOCParseError(ValueError):
    """An XML file that does not parse or lacks a required element."""


def _number(node: ET.Element | None, tag: str) -> float | None:
    text = node.findtext(tag) if node is not None else None
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def parse_voc_xml(path: str) -> tuple[dict, list[dict]]:
    """(image fields, objects) of one annotation file: ``width``/``height`` (None when absent) and
    per object ``name``, ``difficult`` and ``bbox`` (COCO ``[x, y, w, h]``, or the raw values when
    a coordinate is missing or not a number, for the checks to report)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise VOCParseError(f"malformed XML ({e})") from e
    if root.tag != "annotation":
        raise VOCParseError(f"the root element is <{root.tag}>, not <annotation>")
    size = root.find("size")
    width, height = _number(size, "width"), _number(size, "height")
    objects = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        coords = [_number(box, t) for t in ("xmin", "ymin", "xmax", "ymax")]
        raw = {t: box.findtext(t) if box is not None else None for t in ("xmin", "ymin", "xmax", "ymax")}
        if None in coords:
            bbox = raw
        else:
            x1, y1, x2, y2 = coords
            bbox = [x1 - 1.0, y1 - 1.0, x2 - x1 + 1.0, y2 - y1 + 1.0]
        difficult = obj.findtext("difficult")
        objects.append({"name": (obj.findtext("name") or "").strip(), "bbox": bbox, "raw": raw,
                        "difficult": int(difficult.strip() == "1") if difficult else 0})
    return {"width": width, "height": height}, objects


def image_set_file(root: str, image_set: str) -> str:
    """The list file of "VOC2007/trainval": ``root/VOC2007/ImageSets/Main/trainval.txt``."""
    year_dir, _, split = image_set.partition("/")
    if not split:
        raise ValueError(f"image set {image_set!r}: expected YEAR_FOLDER/SPLIT such as 'VOC2007/trainval'")
    return os.path.join(root, year_dir, "ImageSets", "Main", f"{split}.txt")


def read_image_set(root: str, image_set: str) -> tuple[str, list[str]]:
    """(year folder, image ids) for "VOC2007/trainval"; a missing folder or list raises, naming it."""
    list_file = image_set_file(root, image_set)
    year_dir = image_set.partition("/")[0]
    if not os.path.isfile(list_file):
        raise FileNotFoundError(f"VOC image list not found: {list_file} (data.root must be the folder holding "
                                f"{year_dir}/, with Annotations/, JPEGImages/ and ImageSets/Main/ inside)")
    with open(list_file) as f:
        return year_dir, [line.split()[0] for line in f if line.strip()]


def voc_records(root: str, image_sets: Sequence[str], class_names: Sequence[str]) -> dict:
    """COCO-style records for the concatenated ``image_sets``. Problems are kept in the records for
    the checks to report: XML that does not parse becomes an image entry with ``malformed``."""
    images, annotations = [], []
    listed = [(year, sid) for s in image_sets for year, ids in [read_image_set(root, s)] for sid in ids]
    category_of = {name: i + 1 for i, name in enumerate(class_names)}
    for image_id, (year, sid) in enumerate(tqdm(listed, desc="reading VOC annotations", unit="xml", leave=False,
                                                disable=len(listed) < 500 or not shows_progress_bars(), dynamic_ncols=True), start=1):
        xml_path = os.path.join(root, year, "Annotations", f"{sid}.xml")
        image = {"id": image_id, "file_name": os.path.join(year, "JPEGImages", f"{sid}.jpg"), "source": xml_path}
        images.append(image)
        try:
            if not os.path.isfile(xml_path):
                raise VOCParseError("annotation file not found")
            fields, objects = parse_voc_xml(xml_path)
        except VOCParseError as e:
            image["malformed"] = str(e)
            continue
        image.update(fields)
        for k, obj in enumerate(objects, start=1):
            coords = " ".join(f"{t}={v}" for t, v in obj["raw"].items())
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category_of.get(obj["name"]),
                "category_name": obj["name"], "bbox": obj["bbox"], "iscrowd": 0, "difficult": obj["difficult"],
                "source": f"{xml_path}: object {k} ({obj['name']!r}, {coords})",
            })
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]}


class VOCDataset(DetectionDataset):
    """PASCAL VOC (or any data in its layout) under ``root``, the folder that holds ``VOC2007/``.

    Args:
        image_sets: ``YEAR_FOLDER/SPLIT`` names, concatenated in order (e.g. 07+12 trainval).
        class_names: the classes, in label order; an object with another name is an
            ``unknown_category`` problem.
        keep_difficult: also train on ``difficult`` objects (evaluation always ignores them).
    """

    def __init__(self, *, root: str, image_sets: Annotated[list[str], NonEmpty(), MaxLength(64)],
                 class_names: ClassNames = VOC_CLASSES,
                 keep_difficult: bool = False,
                 checks: Mapping[str, str] | None = None, filter_empty: bool = False):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"VOC root not found: {root} (the folder holding VOC2007/ and VOC2012/)")
        self.root = root
        self.image_sets = list(image_sets)
        super().__init__(name=f"{root} [{' + '.join(self.image_sets)}]", image_root=root,
                         records=voc_records(root, self.image_sets, list(class_names)),
                         checks=checks, ignore_flag=None if keep_difficult else "difficult",
                         source_files=[image_set_file(root, s) for s in self.image_sets], filter_empty=filter_empty)
