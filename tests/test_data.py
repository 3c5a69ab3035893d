import json
import os

import cv2
import numpy as np
import torch
from conftest import DATA_DIR

from detectres.data.datasets.coco import COCODataset
from detectres.data.datasets.shapes import CLASSES, ensure_shapes_dataset
from detectres.data.loader import build_train_loader
from detectres.data.samplers import AspectRatioGroupedBatchSampler, InfiniteShuffleSampler
from detectres.data.samples import DetectionSamples
from detectres.data.transforms import apply_transforms, build_transforms
from detectres.utils.resize import shortest_edge_size

COCO8 = os.path.join(DATA_DIR, "coco8")


def write_coco(tmp_path, images, annotations, categories, sizes=None):
    img_dir = tmp_path / "images"
    img_dir.mkdir(exist_ok=True)
    for im in images:
        h, w = im["height"], im["width"]
        cv2.imwrite(str(img_dir / im["file_name"]), np.full((h, w, 3), 100, np.uint8))
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return str(img_dir), str(ann)


def test_coco8_loads_with_coco_categories():
    ds = COCODataset(image_dir=os.path.join(COCO8, "val"), ann_file=os.path.join(COCO8, "annotations/instances_val.json"))
    assert len(ds.class_names) == 80 and ds.class_names[0] == "person" and ds.class_names[-1] == "toothbrush"
    # COCO ids are non-contiguous: 90 is toothbrush, label 79
    assert ds.label_to_category_id[79] == 90 and ds.category_id_to_label[90] == 79
    item = DetectionSamples(records=ds)[ds.image_ids.index(36)]
    assert item["image"].shape == (3, 640, 481) and item["image"].dtype == torch.uint8
    names = sorted(ds.class_names[i] for i in item["gt_classes"].tolist())
    assert names == ["person", "umbrella"]  # category ids 1 and 28
    assert torch.allclose(item["gt_boxes"][0], torch.tensor([0.0, 50.12, 457.68, 480.47]), atol=0.01)


def test_category_mapping_round_trip_and_crowd_and_empty(tmp_path):
    images = [{"id": 7, "file_name": "a.png", "height": 40, "width": 50},
              {"id": 9, "file_name": "b.png", "height": 40, "width": 50}]
    cats = [{"id": 12, "name": "dog"}, {"id": 3, "name": "cat"}]
    anns = [{"id": 1, "image_id": 7, "category_id": 12, "bbox": [1, 2, 10, 20], "iscrowd": 0, "area": 200},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [5, 5, 10, 10], "iscrowd": 1, "area": 100}]
    ds = COCODataset(**dict(zip(("image_dir", "ann_file"), write_coco(tmp_path, images, anns, cats))))
    assert ds.class_names == ["cat", "dog"] and ds.label_to_category_id == [3, 12]
    samples = DetectionSamples(records=ds)
    first = samples[0]
    assert first["gt_classes"].tolist() == [1]  # dog; the crowd cat is left out
    assert first["gt_boxes"].tolist() == [[1.0, 2.0, 11.0, 22.0]]
    empty = samples[1]  # an image without objects is kept
    assert empty["gt_boxes"].shape == (0, 4) and empty["gt_classes"].shape == (0,)


def test_resize_rule_matches_detectron2():
    assert shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    assert shortest_edge_size(480, 640, 600, 1333) == (600, 800)
    assert shortest_edge_size(100, 1000, 800, 1333) == (133, 1333)


def test_transforms_keep_boxes_consistent():
    image = np.zeros((100, 200, 3), np.uint8)
    image[10:30, 20:60] = 255
    boxes = np.array([[20.0, 10.0, 60.0, 30.0]], np.float32)
    for flip in (0.0, 1.0):
        t = build_transforms(short_edges=[50], max_size=1000, flip_prob=flip)
        out, out_boxes, labels = apply_transforms(t, image, boxes, np.array([0]))
        assert out.shape == (50, 100, 3) and labels.tolist() == [0]
        x1, y1, x2, y2 = out_boxes[0].round().astype(int)
        assert out[y1:y2, x1:x2].mean() > 200  # the box still covers the white patch
        expected = [10, 5, 30, 15] if flip == 0 else [70, 5, 90, 15]
        np.testing.assert_allclose(out_boxes[0], expected, atol=1e-3)


def test_aspect_ratio_grouping_and_infinite_sampler():
    ratios = [1.5, 0.5, 1.5, 0.5, 2.0, 0.7, 1.0, 0.3]
    sampler = AspectRatioGroupedBatchSampler(InfiniteShuffleSampler(8, seed=3), ratios, batch_size=2)
    it = iter(sampler)
    for _ in range(20):
        batch = next(it)
        assert len(batch) == 2
        assert len({ratios[i] >= 1 for i in batch}) == 1


def test_shapes_dataset_generation_is_deterministic_and_cached(tmp_path):
    a = ensure_shapes_dataset(str(tmp_path / "a"), num_train=5, num_val=2, size=96, seed=4)
    b = ensure_shapes_dataset(str(tmp_path / "b"), num_train=5, num_val=2, size=96, seed=4)
    ja = json.load(open(os.path.join(a, "annotations/instances_train.json")))
    jb = json.load(open(os.path.join(b, "annotations/instances_train.json")))
    assert ja == jb and [c["name"] for c in ja["categories"]] == list(CLASSES)
    assert len(ja["images"]) == 5 and len(ja["annotations"]) >= 5
    mtime = os.path.getmtime(os.path.join(a, "DONE.json"))
    ensure_shapes_dataset(str(tmp_path / "a"), num_train=5, num_val=2, size=96, seed=4)
    assert os.path.getmtime(os.path.join(a, "DONE.json")) == mtime  # not regenerated
    ds = COCODataset(image_dir=os.path.join(a, "train"), ann_file=os.path.join(a, "annotations/instances_train.json"))
    for item in DetectionSamples(records=ds):
        b = item["gt_boxes"]
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all() and b.max() <= 96


def test_multi_worker_loader(tiny_shapes):
    t = build_transforms(short_edges=[96, 112], max_size=200, flip_prob=0.5)
    ds = DetectionSamples(records=COCODataset(image_dir=os.path.join(tiny_shapes, "train"),
                                              ann_file=os.path.join(tiny_shapes, "annotations/instances_train.json")),
                          transforms=t)
    loader = build_train_loader(ds, batch_size=4, num_workers=2, seed=0)
    assert loader.batch_sampler.aspect_ratios is ds.records.aspect_ratios  # batches grouped by the records' shapes
    it = iter(loader)
    batches = [next(it) for _ in range(3)]
    assert all(len(b) == 4 for b in batches)
    assert all(min(x["image"].shape[1:]) in (96, 112) for b in batches for x in b)


def test_training_drops_images_without_a_usable_box_unless_told_to_keep_them(tmp_path, caplog):
    """Detectron2's FILTER_EMPTY_ANNOTATIONS: images with no box, or only crowd boxes, leave training."""
    import logging

    from detectres.config import compose_config
    from detectres.data.build import build_dataset

    images = [{"id": i, "file_name": f"{i}.png", "height": 40, "width": 50} for i in (1, 2, 3, 4)]
    cats = [{"id": 1, "name": "dog"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 20], "iscrowd": 0, "area": 200},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10], "iscrowd": 1, "area": 100},
            {"id": 3, "image_id": 4, "category_id": 1, "bbox": [5, 5, 10, 10], "iscrowd": 1, "area": 100},
            {"id": 4, "image_id": 4, "category_id": 1, "bbox": [20, 5, 10, 10], "iscrowd": 0, "area": 100}]
    image_dir, ann_file = write_coco(tmp_path, images, anns, cats)
    paths = [f"data.{s}.{k}={v}" for s in ("train", "val") for k, v in (("image_dir", image_dir), ("ann_file", ann_file))]
    with caplog.at_level(logging.INFO, logger="detectres"):
        train = build_dataset(compose_config("train", ["data=custom", *paths]), "train")
    assert train.records.image_ids == [1, 4] and train.records.dropped_empty == 2  # 2: crowd only, 3: no box
    assert "train split: dropped 2 image(s) without a usable box" in caplog.text
    kept = build_dataset(compose_config("train", ["data=custom", *paths, "data.train.filter_empty=false"]), "train")
    assert kept.records.image_ids == [1, 2, 3, 4] and kept.records.dropped_empty == 0
    val = build_dataset(compose_config("train", ["data=custom", *paths]), "val")
    assert val.records.image_ids == [1, 2, 3, 4]  # evaluation keeps every image
