"""YOLO-format data (the Ultralytics layout) and conversion between COCO, VOC and YOLO: the records, the data
checks on bad YOLO data, and round trips that keep every box (within the formats' rounding) and the classes."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from test_voc import VOC07, write_voc

from detectres.config import PROJECT_ROOT, compose_config
from detectres.data.build import build_dataset, dataset_class_names
from detectres.data.checks import DataCheckError
from detectres.data.convert import convert_dataset
from detectres.data.datasets.coco import COCODataset
from detectres.data.datasets.voc import VOCDataset
from detectres.data.datasets.yolo import YOLODataset, label_path

CONVERT = os.path.join(PROJECT_ROOT, "tools", "convert_data.py")


def write_yolo(root, labels, names="names: {0: cat, 1: dog}", size=(48, 64), val_list=None):
    """``labels``: split -> {image name: label text or None (no label file)}; images are grey PNGs."""
    root.mkdir(parents=True, exist_ok=True)
    for split, items in labels.items():
        for name, text in items.items():
            image = root / "images" / split / name
            image.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(image), np.full((*size, 3), 90, np.uint8))
            if text is not None:
                label = root / "labels" / split / (os.path.splitext(name)[0] + ".txt")
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text(text)
    val = "val.txt" if val_list is not None else "images/val"
    if val_list is not None:
        (root / "val.txt").write_text("".join(f"{p}\n" for p in val_list))
    (root / "data.yaml").write_text(f"{names}\ntrain: images/train\nval: {val}\n")
    return root


def boxes_by_file(dataset):
    """file stem -> sorted [(class name, x, y, w, h)] of every box."""
    out = {}
    for image_id in dataset.image_ids:
        boxes = dataset.boxes_of(image_id)
        names = [dataset.class_names[k] for k in dataset.labels_of(boxes)]
        stem = os.path.splitext(os.path.basename(dataset.imgs[image_id]["file_name"]))[0]
        out[stem] = sorted((n, *b) for n, b in zip(names, boxes.boxes.tolist()))
    return out


def same(found, expected) -> bool:
    """The same class names, and boxes equal to 1e-6 px."""
    return [b[0] for b in found] == [b[0] for b in expected] and np.allclose(
        [b[1:] for b in found], [b[1:] for b in expected], atol=1e-6, rtol=0)


def test_yolo_layout_boxes_polygons_lists_and_images_without_labels(tmp_path):
    root = write_yolo(tmp_path / "y", {"train": {"a.png": "1 0.5 0.5 0.25 0.5\n0 0.1 0.1 0.3 0.1 0.3 0.3\n",
                                                 "b.png": None},
                                       "val": {"c.png": "0 0.5 0.5 0.5 0.5\n"}},
                      val_list=["./images/val/c.png"])
    train = YOLODataset(root=str(root), split="train")
    assert train.class_names == ["cat", "dog"] and not train.report.problems and len(train) == 2
    a, b = boxes_by_file(train)["a"], boxes_by_file(train)["b"]
    assert same(a, [("cat", 6.4, 4.8, 12.8, 9.6), ("dog", 24.0, 12.0, 16.0, 24.0)])  # the polygon's bounding box
    assert b == []  # no label file: an image without objects
    val = YOLODataset(root=str(root), split="val")
    assert same(boxes_by_file(val)["c"], [("cat", 16.0, 12.0, 32.0, 24.0)]) and len(val) == 1
    assert label_path(os.path.join("d", "images", "val", "c.png")) == os.path.join("d", "labels", "val", "c.txt")
    assert dataset_class_names(compose_config("train", ["data=yolo", f"data.root={root}"]).data) == ["cat", "dog"]
    samples = build_dataset(compose_config("train", ["data=yolo", f"data.root={root}", "model=quickstart"]), "val")
    assert samples[0]["gt_classes"].tolist() == [0] and samples[0]["file_name"].endswith("c.png")


def test_bad_yolo_data_is_reported_by_the_checks_and_their_policies(tmp_path):
    """Each problem in a YOLO label file is a data-check kind with its policy, and names the file and line."""
    text = ("0 0.5 0.5 0.2 0.2\n"     # fine
            "5 0.5 0.5 0.2 0.2\n"     # class 5: names has 2
            "0 0.5 abc 0.2 0.2\n"     # not numbers
            "1 0.5 0.5 0.2\n"         # four numbers
            "1 1.0 0.5 0.2 0.2\n")    # 0.1 of the width (6.4 px) past the right edge: clipped
    root = write_yolo(tmp_path / "y", {"train": {"a.png": text}, "val": {"v.png": ""}},
                      val_list=["./images/val/v.png", "./images/val/gone.png"])
    ds = YOLODataset(root=str(root), split="train")
    found = sorted((p.kind, p.action, p.where.rsplit(": ", 1)[-1].split(" ")[1]) for p in ds.report.problems)
    assert found == [("box_outside_image", "fix", "5"), ("malformed_box", "drop_annotation", "3"),
                     ("malformed_box", "drop_annotation", "4"), ("unknown_category", "drop_annotation", "2")]
    assert all(os.path.join("labels", "train", "a.txt") in p.where for p in ds.report.problems)
    assert same(boxes_by_file(ds)["a"], [("cat", 25.6, 19.2, 12.8, 9.6), ("dog", 57.6, 19.2, 6.4, 9.6)])
    val = YOLODataset(root=str(root), split="val")
    assert [(p.kind, p.action) for p in val.report.problems] == [("missing_image", "skip_image")] and len(val) == 1
    with pytest.raises(DataCheckError, match=r"unknown_category, fatal"):
        YOLODataset(root=str(root), split="train", checks={"unknown_category": "fail"})
    (root / "data.yaml").write_text("names: {0: cat, 2: dog}\ntrain: images/train\nval: images/val\n")
    with pytest.raises(ValueError, match=r"data.yaml: names ids \[0, 2\] are not 0..1"):
        YOLODataset(root=str(root), split="train")
    (root / "data.yaml").write_text("names: " + "[" * 20000 + "]" * 20000 + "\ntrain: images/train\n")
    with pytest.raises(ValueError, match=r"data.yaml: nested too deeply to be a YOLO data.yaml"):
        YOLODataset(root=str(root), split="train")


def test_coco_to_yolo_to_coco_gives_the_same_boxes_and_classes_back(tiny_shapes, tmp_path):
    report = convert_dataset(tiny_shapes, str(tmp_path / "yolo"), source_format="coco", target_format="yolo")
    assert report.splits == {"train": 24, "val": 8} and report.images["linked"] == 32 and not report.left_out
    back = convert_dataset(str(tmp_path / "yolo"), str(tmp_path / "coco"), source_format="yolo", target_format="coco")
    assert back.boxes == report.boxes
    for split in ("train", "val"):
        ann = f"annotations/instances_{split}.json"
        original = COCODataset(image_dir=os.path.join(tiny_shapes, split), ann_file=os.path.join(tiny_shapes, ann))
        again = COCODataset(image_dir=str(tmp_path / "coco" / split), ann_file=str(tmp_path / "coco" / ann))
        assert again.class_names == original.class_names
        before, after = boxes_by_file(original), boxes_by_file(again)
        assert before.keys() == after.keys()
        for stem in before:
            assert [b[0] for b in before[stem]] == [b[0] for b in after[stem]]
            assert np.abs(np.array([b[1:] for b in before[stem]]) - np.array([b[1:] for b in after[stem]])).max(
                initial=0) == 0  # whole-pixel boxes come back exactly (the reader rounds to 1e-3 px)
    assert json.load(open(tmp_path / "coco" / "annotations/instances_val.json"))["categories"][0] == {
        "id": 1, "name": original.class_names[0]}
    convert_dataset(tiny_shapes, str(tmp_path / "yolo10"), source_format="coco", target_format="yolo", decimals=10)
    precise = YOLODataset(root=str(tmp_path / "yolo10"), split="val")
    assert np.abs(precise.boxes.boxes - original.boxes.boxes).max() < 1e-7  # same image and box order too


def test_voc_to_yolo_to_voc_keeps_the_boxes_and_says_what_yolo_cannot_hold(tmp_path):
    write_voc(tmp_path / "voc", "VOC2007", VOC07)
    report = convert_dataset(str(tmp_path / "voc"), str(tmp_path / "yolo"), source_format="voc",
                             target_format="yolo", images="copy")
    assert report.left_out == {"difficult boxes (YOLO has none)": 2} and report.images == {"copied": 8}
    convert_dataset(str(tmp_path / "yolo"), str(tmp_path / "back"), source_format="yolo", target_format="voc")
    original = VOCDataset(root=str(tmp_path / "voc"), image_sets=["VOC2007/trainval"])
    again = VOCDataset(root=str(tmp_path / "back"), image_sets=["VOC/train"])
    keep = {stem: [b for b in boxes if not (stem == "000002" and b[0] == "dog")]  # the difficult dog
            for stem, boxes in boxes_by_file(original).items()}
    assert boxes_by_file(again) == keep


def test_the_tool_refuses_a_folder_with_files_and_says_what_it_did(tiny_shapes, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep me")
    run = [sys.executable, CONVERT, tiny_shapes]
    res = subprocess.run([*run, str(tmp_path / "full"), "from=coco", "to=yolo"], capture_output=True, text=True)
    assert res.returncode == 1 and "already holds files" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep me"
    res = subprocess.run([*run, str(tmp_path / "x"), "from=coco", "to=yolo", "image=copy"], capture_output=True, text=True)
    assert res.returncode == 1 and "unknown option image=" in res.stderr
    res = subprocess.run([*run, str(tmp_path / "out"), "from=coco", "to=voc", "images=copy"], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "32 re-encoded as JPEG" in res.stdout and f"wrote voc to {tmp_path / 'out'}" in res.stdout
