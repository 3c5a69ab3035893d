"""Converting a dataset between COCO, PASCAL VOC and YOLO (``tools/convert_data.py``).

A source is read through its dataset class (:class:`COCODataset`, :class:`VOCDataset`, :class:`YOLODataset`),
so the data checks run on it and what they drop or fix is reported, never converted silently. Layouts:

- COCO: ``ROOT/annotations/instances_<split>.json`` with the images in ``ROOT/<split>/`` (COCO 2017's);
- VOC: ``ROOT/<YEAR>/{Annotations,JPEGImages,ImageSets/Main/<split>.txt}`` (written as ``ROOT/VOC/...``);
- YOLO: ``ROOT/data.yaml`` with ``images/<split>/`` and ``labels/<split>/`` (Ultralytics').

Class names and their order are kept (COCO category ids become 1..K in that order). A format that cannot
hold something says so in the summary: YOLO has no crowd or difficult boxes (they are left out, counted),
VOC keeps boxes as whole pixels (rounded: at most 0.5 px) and images as JPEG (others are re-encoded).
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import yaml

from detectres.data.datasets.base import DetectionDataset
from detectres.data.datasets.coco import COCODataset
from detectres.data.datasets.voc import VOC_CLASSES, VOCDataset
from detectres.data.datasets.yolo import SPLITS, YOLODataset, read_data_yaml
from detectres.data.records import BoxTable
from detectres.utils.file_io import TEMP_PREFIX, atomic_write_text, dir_mode
from detectres.utils.outputs import write_image

FORMATS = ("coco", "voc", "yolo")
IMAGE_MODES = ("link", "copy", "symlink")
VOC_SPLITS = ("train", "val", "trainval", "test")


@dataclass
class ConversionReport:
    """What was written and what the target format could not hold."""
    splits: dict[str, int] = field(default_factory=dict)   # split -> images
    boxes: int = 0
    images: Counter = field(default_factory=Counter)        # linked / copied / symlinked / re-encoded as JPEG
    left_out: Counter = field(default_factory=Counter)      # e.g. "crowd boxes (YOLO has none)"
    data_checks: list[str] = field(default_factory=list)    # each split's data-check summary

    def lines(self) -> list[str]:
        out = [f"{split}: {n} images" for split, n in self.splits.items()]
        out.append(f"{self.boxes} boxes written; images " + ", ".join(f"{n} {how}" for how, n in self.images.items()))
        out += [f"left out: {n} {what}" for what, n in self.left_out.items()]
        return out + self.data_checks


# -- reading -----------------------------------------------------------------------------------------------
def read_splits(src: str, fmt: str, class_names: Sequence[str] | None = None) -> dict[str, DetectionDataset]:
    """Split name -> the checked records of that split of the dataset at ``src`` in format ``fmt``."""
    if not os.path.isdir(src):
        raise FileNotFoundError(f"source dataset folder not found: {src}")
    if fmt == "coco":
        files = sorted(glob.glob(os.path.join(src, "annotations", "instances_*.json")))
        if not files:
            raise FileNotFoundError(f"{src}: no annotations/instances_<split>.json (the COCO layout)")
        return {split: COCODataset(image_dir=os.path.join(src, split), ann_file=path)
                for path in files for split in [os.path.basename(path)[len("instances_"):-len(".json")]]}
    if fmt == "yolo":
        spec = read_data_yaml(src)
        return {split: YOLODataset(root=src, split=split) for split in SPLITS if spec.get(split)}
    names = list(class_names or VOC_CLASSES)
    found = sorted(glob.glob(os.path.join(src, "*", "ImageSets", "Main", "*.txt")))
    sets = [(p.split(os.sep)[-4], os.path.basename(p)[:-4]) for p in found if os.path.basename(p)[:-4] in VOC_SPLITS]
    if not sets:
        raise FileNotFoundError(f"{src}: no <YEAR>/ImageSets/Main/<split>.txt (the VOC layout)")
    unique = len({split for _, split in sets}) == len(sets)
    return {split if unique else f"{year}-{split}": VOCDataset(root=src, image_sets=[f"{year}/{split}"], class_names=names)
            for year, split in sets}


# -- writing -----------------------------------------------------------------------------------------------
def place_image(src: str, dst: str, mode: str) -> str:
    """Put the image ``src`` at ``dst`` (``mode``: hard link, falling back to a copy across file systems;
    copy; symbolic link); returns what was done."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if mode == "symlink":
        os.symlink(os.path.abspath(src), dst)
        return "symlinked"
    if mode == "link":
        try:
            os.link(src, dst)
            return "linked"
        except OSError:
            pass
    shutil.copy2(src, dst)
    return "copied"


def image_boxes(dataset: DetectionDataset, image_id: int) -> tuple[BoxTable, np.ndarray]:
    boxes = dataset.boxes_of(image_id)
    return boxes, dataset.labels_of(boxes)


def write_coco(dataset: DetectionDataset, split: str, dst: str, mode: str, report: ConversionReport) -> None:
    images, annotations = [], []
    for image_id in dataset.image_ids:
        image = dataset.imgs[image_id]
        report.images[place_image(dataset.image_path(image_id), os.path.join(dst, split, image["file_name"]), mode)] += 1
        images.append({"id": image_id, "file_name": image["file_name"], "width": image["width"], "height": image["height"]})
        boxes, labels = image_boxes(dataset, image_id)
        for row, label in enumerate(labels.tolist()):
            x, y, w, h = boxes.boxes[row].tolist()
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1, "bbox": [x, y, w, h],
                   "area": w * h, "iscrowd": int(boxes.iscrowd[row])}
            if boxes.difficult is not None:
                ann["difficult"] = int(boxes.difficult[row])
            annotations.append(ann)
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(dataset.class_names)]
    atomic_write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}),
                      os.path.join(dst, "annotations", f"instances_{split}.json"))
    report.boxes += len(annotations)


def yolo_lines(boxes: BoxTable, labels: np.ndarray, width: int, height: int, report: ConversionReport,
               decimals: int = 6) -> list[str]:
    """``class cx cy w h`` lines (normalised, ``decimals`` places) of the boxes YOLO can hold."""
    lines = []
    for row, label in enumerate(labels.tolist()):
        if boxes.iscrowd[row]:
            report.left_out["crowd boxes (YOLO has none)"] += 1
            continue
        if boxes.difficult is not None and boxes.difficult[row]:
            report.left_out["difficult boxes (YOLO has none)"] += 1
            continue
        x, y, w, h = boxes.boxes[row].tolist()
        values = ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)
        lines.append(" ".join([str(label), *(f"{v:.{decimals}f}" for v in values)]))
    return lines


def yolo_split(split: str) -> str:
    """The YOLO split a source split becomes: ``train``, ``val`` or ``test`` (``train2017`` -> ``train``)."""
    for name in SPLITS:
        if split.startswith(name):
            return name
    raise ValueError(f"split {split!r}: a YOLO data.yaml has train, val and test only (name it after one of them)")


def write_yolo(dataset: DetectionDataset, split: str, dst: str, mode: str, report: ConversionReport,
               decimals: int = 6) -> None:
    for image_id in dataset.image_ids:
        image = dataset.imgs[image_id]
        target = os.path.join(dst, "images", split, image["file_name"])
        report.images[place_image(dataset.image_path(image_id), target, mode)] += 1
        lines = yolo_lines(*image_boxes(dataset, image_id), image["width"], image["height"], report, decimals)
        label_file = os.path.splitext(os.path.join(dst, "labels", split, image["file_name"]))[0] + ".txt"
        atomic_write_text("".join(f"{line}\n" for line in lines), label_file)
        report.boxes += len(lines)


def voc_xml(file_name: str, image: dict, boxes: BoxTable, labels: np.ndarray, names: list[str]) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", image["width"]), ("height", image["height"]), ("depth", 3)):
        ET.SubElement(size, tag).text = str(int(value))
    for row, label in enumerate(labels.tolist()):
        x, y, w, h = boxes.boxes[row].tolist()
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = names[label]
        flagged = boxes.iscrowd[row] or (boxes.difficult is not None and boxes.difficult[row])
        ET.SubElement(obj, "difficult").text = str(int(bool(flagged)))
        box = ET.SubElement(obj, "bndbox")  # 1-based inclusive pixels: x1 = xmin - 1, x2 = xmax
        for tag, value in (("xmin", round(x) + 1), ("ymin", round(y) + 1), ("xmax", round(x + w)), ("ymax", round(y + h))):
            ET.SubElement(box, tag).text = str(int(value))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_voc(dataset: DetectionDataset, split: str, dst: str, mode: str, report: ConversionReport,
              taken: set[str]) -> None:
    folder, ids = os.path.join(dst, "VOC"), []
    for image_id in dataset.image_ids:
        image = dataset.imgs[image_id]
        stem = os.path.splitext(os.path.basename(image["file_name"]))[0]
        stem = stem if stem not in taken else f"{split}_{stem}"  # one Annotations/ folder for every split
        taken.add(stem)
        ids.append(stem)
        source, target = dataset.image_path(image_id), os.path.join(folder, "JPEGImages", f"{stem}.jpg")
        if source.lower().endswith((".jpg", ".jpeg")):
            report.images[place_image(source, target, mode)] += 1
        else:
            write_image(target, dataset.read_image(image_id))
            report.images["re-encoded as JPEG"] += 1
        boxes, labels = image_boxes(dataset, image_id)
        atomic_write_text(voc_xml(f"{stem}.jpg", image, boxes, labels, dataset.class_names),
                          os.path.join(folder, "Annotations", f"{stem}.xml"))
        report.boxes += len(labels)
    atomic_write_text("".join(f"{i}\n" for i in ids), os.path.join(folder, "ImageSets", "Main", f"{split}.txt"))


def convert_dataset(src: str, dst: str, *, source_format: str, target_format: str, images: str = "link",
                    class_names: Sequence[str] | None = None, decimals: int = 6,
                    progress: Callable[[str], None] = lambda _: None) -> ConversionReport:
    """Write the dataset at ``src`` (``source_format``) into the new or empty folder ``dst`` as ``target_format``
    (YOLO coordinates with ``decimals`` places: 6 as Ultralytics writes, up to 12)."""
    if not isinstance(decimals, int) or not 1 <= decimals <= 12:
        raise ValueError(f"decimals={decimals}: an integer from 1 to 12")
    for key, value, allowed in (("from", source_format, FORMATS), ("to", target_format, FORMATS),
                                ("images", images, IMAGE_MODES)):
        if value not in allowed:
            raise ValueError(f"{key}={value}: one of {', '.join(allowed)}")
    if os.path.exists(dst) and (not os.path.isdir(dst) or os.listdir(dst)):
        raise ValueError(f"{dst} already holds files: choose a new or empty folder (nothing is written over)")
    real_src, real_dst = os.path.realpath(src), os.path.realpath(dst)
    if real_dst == real_src or real_src.startswith(real_dst + os.sep):
        raise ValueError(f"{dst} would hold the source {src}: choose a folder outside it")
    splits = read_splits(src, source_format, class_names)
    if target_format == "yolo" and len({yolo_split(s) for s in splits}) < len(splits):
        raise ValueError(f"splits {', '.join(splits)} would share a YOLO split (train, val, test): convert them apart")
    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent)  # renamed to dst when complete: never half-written
    os.chmod(work, dir_mode())
    try:
        report = write_splits(splits, work, target_format, images, progress, decimals)
        if os.path.isdir(dst):
            os.rmdir(dst)  # empty (checked above)
        os.rename(work, dst)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return report


def write_splits(splits: dict[str, DetectionDataset], dst: str, target_format: str, images: str,
                 progress: Callable[[str], None], decimals: int) -> ConversionReport:
    report, taken = ConversionReport(), set()
    for split, dataset in splits.items():
        progress(f"writing {split} ({len(dataset)} images) as {target_format}")
        report.data_checks.append(f"data check, {split}: {dataset.report.summary()}")
        report.splits[split] = len(dataset)
        if target_format == "coco":
            write_coco(dataset, split, dst, images, report)
        elif target_format == "yolo":
            write_yolo(dataset, yolo_split(split), dst, images, report, decimals)
        else:
            write_voc(dataset, split, dst, images, report, taken)
    if target_format == "yolo":
        names = next(iter(splits.values())).class_names
        spec = {"names": list(names), **{yolo_split(s): f"images/{yolo_split(s)}" for s in splits}}
        atomic_write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), os.path.join(dst, "data.yaml"))
    return report
