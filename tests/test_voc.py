"""PASCAL VOC: the devkit layout, 07+12, difficult objects, both AP metrics, and agreement with pycocotools."""
import contextlib
import io
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from detectres.apps.evaluate import evaluate
from detectres.apps.train import train
from detectres.config import PROJECT_ROOT, compose_config
from detectres.data.datasets.base import coco_index
from detectres.data.datasets.voc import VOC_CLASSES, VOCDataset
from detectres.data.samples import DetectionSamples
from detectres.evaluation.voc import VOCEvaluator, average_precision, point_interpolated_ap, precision_recall

# (image id, [(name, xmin, ymin, xmax, ymax, difficult)]) in VOC's 1-based inclusive pixels
VOC07 = [
    ("000001", [("car", 5, 5, 24, 20, 0), ("dog", 35, 21, 58, 40, 0)]),
    ("000002", [("car", 5, 5, 24, 20, 0), ("dog", 35, 21, 58, 40, 1)]),  # a difficult dog
    ("000003", [("dog", 35, 21, 58, 40, 0)]),
    ("000004", [("car", 5, 5, 24, 20, 0)]),
]
VOC12 = [("2008_000001", [("car", 5, 5, 24, 20, 0)]), ("2008_000002", [("dog", 35, 21, 58, 40, 0)])]


def xml_text(name, objects, width=64, height=48, size=True):
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for n, x1, y1, x2, y2, d in objects)
    size_xml = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>" if size else ""
    return f"<annotation><folder>VOC</folder><filename>{name}.jpg</filename>{size_xml}{objs}</annotation>"


def write_voc(root, year, items, splits=("trainval", "test")):
    base = root / year
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for name, objects in items:
        image = np.full((48, 64, 3), 70, np.uint8)
        for n, x1, y1, x2, y2, _ in objects:
            colour = (0, 200, 255) if n == "car" else (255, 90, 0)
            cv2.rectangle(image, (x1 - 1, y1 - 1), (x2 - 1, y2 - 1), colour, -1)
        cv2.imwrite(str(base / "JPEGImages" / f"{name}.jpg"), image)
        (base / "Annotations" / f"{name}.xml").write_text(xml_text(name, objects))
    for split in splits:
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n, _ in items))
    return str(root)


@pytest.fixture()
def voc_root(tmp_path):
    write_voc(tmp_path, "VOC2007", VOC07)
    return write_voc(tmp_path, "VOC2012", VOC12, splits=("trainval",))


def test_voc_layout_boxes_and_difficult(voc_root):
    ds = VOCDataset(root=voc_root, image_sets=["VOC2007/trainval"])
    assert ds.class_names == list(VOC_CLASSES) and len(ds) == 4 and not ds.report.problems
    samples = DetectionSamples(records=ds)
    first = samples[0]
    assert first["file_name"].endswith(os.path.join("VOC2007", "JPEGImages", "000001.jpg"))
    assert first["gt_boxes"].tolist() == [[4.0, 4.0, 24.0, 20.0], [34.0, 20.0, 58.0, 40.0]]  # xmin - 1 .. xmax
    assert [VOC_CLASSES[i] for i in first["gt_classes"]] == ["car", "dog"]
    assert samples[1]["gt_classes"].tolist() == [VOC_CLASSES.index("car")]  # the difficult dog is not a training target
    assert [a["difficult"] for a in ds.coco.imgToAnns[2]] == [0, 1]   # ... but stays for evaluation
    kept = VOCDataset(root=voc_root, image_sets=["VOC2007/trainval"], keep_difficult=True)
    assert len(DetectionSamples(records=kept)[1]["gt_classes"]) == 2


def test_07_plus_12_concatenates(voc_root):
    ds = VOCDataset(root=voc_root, image_sets=["VOC2007/trainval", "VOC2012/trainval"])
    assert len(ds) == 6 and len(set(ds.image_ids)) == 6
    assert ds.image_path(ds.image_ids[-1]).endswith(os.path.join("VOC2012", "JPEGImages", "2008_000002.jpg"))
    with pytest.raises(FileNotFoundError, match=r"VOC2012.ImageSets.Main.test.txt"):
        VOCDataset(root=voc_root, image_sets=["VOC2012/test"])


def test_voc_problems_name_the_xml_and_object(voc_root):
    ann = os.path.join(voc_root, "VOC2007", "Annotations")
    with open(os.path.join(ann, "000002.xml"), "w") as f:
        f.write("<annotation><size><width>64</width>")  # cut short
    with open(os.path.join(ann, "000003.xml"), "w") as f:
        f.write(xml_text("000003", [("dgo", 35, 21, 58, 40, 0), ("car", 30, 10, 20, 20, 0)]))
    with open(os.path.join(ann, "000004.xml"), "w") as f:
        f.write(xml_text("000004", [("car", 5, 5, 24, 20, 0)], size=False))
    os.remove(os.path.join(ann, "000001.xml"))
    ds = VOCDataset(root=voc_root, image_sets=["VOC2007/trainval"])
    found = {p.kind: str(p) for p in ds.report.problems}
    assert set(found) == {"malformed_file", "unknown_category", "nonpositive_box", "bad_image_entry"}
    assert "000002.xml: malformed XML" in found["malformed_file"]
    assert "000003.xml: object 1 ('dgo'" in found["unknown_category"] and "'dgo' is not in the class list" in found[
        "unknown_category"]
    assert "000003.xml: object 2 ('car', xmin=30 ymin=10 xmax=20 ymax=20)" in found["nonpositive_box"]
    assert "000004.xml" in found["bad_image_entry"] and "fixed" in found["bad_image_entry"]
    skipped = [p for p in ds.report.problems if p.action == "skip_image"]
    assert len(skipped) == 2  # 000001 (no XML) and 000002 (malformed)
    assert len(ds) == 2 and ds.coco.imgs[ds.image_ids[1]]["width"] == 64  # size read from the JPEG


def test_voc_trains_and_evaluates_with_both_metrics(voc_root, tmp_path):
    out = tmp_path / "run"
    common = ["data=voc07", f"data.root={voc_root}", "data.num_workers=0", "input.min_size_train=[48]",
              "input.max_size_train=64", "input.min_size_test=48", "input.max_size_test=64", "solver.ims_per_batch=2",
              "solver.max_iter=3", "solver.lr_scheduler.warmup_iters=1", "solver.lr_scheduler.steps=[2]",
              "vis_images=0", "runtime.num_threads=1"]
    results = train(compose_config("train", [*common, f"runtime.output_dir={out}"]))
    saved = json.load(open(out / "eval.json"))
    assert saved["metric"] == "voc_11point" and set(saved["per_class"]) == set(VOC_CLASSES)
    assert saved["per_class"]["cat"] is None  # no cats in the test set: undefined, not 0
    assert results["AP50"] == pytest.approx(np.mean([results["per_class"]["car"], results["per_class"]["dog"]]))
    assert os.path.isfile(out / "inference" / "voc_results" / "comp4_det_test_car.txt")
    overrides = [f"checkpoint={out / 'model_final.pth'}", "data=voc07", f"data.root={voc_root}",
                 "data.evaluator.metric=area", f"runtime.output_dir={tmp_path / 'e'}"]
    area = evaluate(compose_config("eval", overrides), overrides)
    assert json.load(open(tmp_path / "e" / "eval.json"))["metric"] == "voc_area"
    assert 0.0 <= area["AP50"] <= 100.0
    for name in ("pr_curves.png", "pr_curves_by_class.png", "per_class_ap.png", "pr_curves.json"):  # VOC plots too
        assert os.path.getsize(tmp_path / "e" / name) > 1000, name
    assert os.path.isfile(out / "training_curves.png")
    # the checkpoint knows it was composed from data=voc07: its keys are overridable without naming it again
    assert torch.load(out / "model_final.pth", weights_only=True)["config"]["choices"]["data"] == "voc07"
    res = subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / "test_net.py"), f"checkpoint={out / 'model_final.pth'}",
                          "data.evaluator.metric=area", f"runtime.output_dir={tmp_path / 'e2'}", "runtime.num_threads=1"],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.load(open(tmp_path / "e2" / "eval.json"))["metric"] == "voc_area"


# A hand-made case: 3 non-difficult boxes (A, B in image 1; C in image 2) and one difficult (D).
GT = {1: (np.array([[10, 10, 50, 50], [100, 100, 140, 140]], float), np.array([False, False])),
      2: (np.array([[10, 10, 50, 50], [100, 100, 140, 140]], float), np.array([False, True]))}
DETS = [  # image, score, box: TP on A, on difficult D (ignored), a false positive, TP on C, duplicate on A
    (1, 0.9, [11, 11, 50, 50]), (2, 0.8, [101, 100, 140, 141]), (1, 0.7, [200, 200, 240, 240]),
    (2, 0.65, [10, 12, 50, 50]), (1, 0.6, [10, 10, 49, 51]),
]


def test_11_point_and_area_match_hand_computed_values():
    ids = np.array([d[0] for d in DETS])
    scores = np.array([d[1] for d in DETS])
    boxes = np.array([d[2] for d in DETS], float)
    recall, precision, num_pos = precision_recall(ids, scores, boxes, GT, 0.5)
    # sequence without the ignored one: TP, FP, TP, FP
    assert num_pos == 3
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3, 1 / 2])
    # 11-point: recall >= 0, .1, .2, .3 -> 1; >= .4, .5, .6 -> 2/3; >= .7 .. 1 -> 0
    assert average_precision(recall, precision, "11point") == pytest.approx((4 * 1 + 3 * 2 / 3) / 11)
    # area: recall 0 -> 1/3 at precision 1, 1/3 -> 2/3 at 2/3, nothing beyond
    assert average_precision(recall, precision, "area") == pytest.approx(1 / 3 + 1 / 3 * 2 / 3)
    # the evaluator over a dataset gives the same, in percent
    records = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 300, "height": 300} for i in (1, 2)],
               "annotations": [{"id": k, "image_id": i, "category_id": 1, "bbox": [*b[:2], b[2] - b[0], b[3] - b[1]],
                                "iscrowd": 0, "area": 1600, "difficult": int(d)}
                               for k, (i, b, d) in enumerate(((1, GT[1][0][0], 0), (1, GT[1][0][1], 0),
                                                              (2, GT[2][0][0], 0), (2, GT[2][0][1], 1)), start=1)],
               "categories": [{"id": 1, "name": "thing"}]}
    dataset = SimpleNamespace(coco=coco_index(records), class_names=["thing"], category_id_to_label={1: 0})
    for metric, expected in (("11point", (4 + 2) / 11), ("area", 5 / 9)):
        evaluator = VOCEvaluator(dataset, metric=metric)
        for i in (1, 2):
            mine = [d for d in DETS if d[0] == i]
            evaluator.process([{"image_id": i}], [{"pred_boxes": torch.tensor([d[2] for d in mine], dtype=torch.float),
                                                    "scores": torch.tensor([d[1] for d in mine]),
                                                    "pred_classes": torch.zeros(len(mine), dtype=torch.long)}])
        assert evaluator.evaluate()["AP50"] == pytest.approx(100 * expected)


def random_case(seed=0, num_images=12, num_classes=2):
    """Ground truth one per 100-px grid cell, detections near them (hits, duplicates) or in empty cells:
    each detection overlaps at most one box, far from the IoU 0.5 boundary, scores all distinct."""
    rng = np.random.default_rng(seed)
    images, gts, dets = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 400, "height": 400})
        cells = rng.permutation(16)
        for cell in cells[: rng.integers(0, 6)]:
            x, y = 100 * (cell % 4) + rng.uniform(5, 30), 100 * (cell // 4) + rng.uniform(5, 30)
            w, h = rng.uniform(30, 60, 2)
            label = int(rng.integers(0, num_classes))
            gts.append({"id": len(gts) + 1, "image_id": image_id, "category_id": label + 1, "bbox": [x, y, w, h],
                        "iscrowd": 0, "area": w * h})
            for _ in range(int(rng.random() < 0.8) + int(rng.random() < 0.3)):
                dx, dy = rng.uniform(-2, 2, 2)
                dets.append((image_id, label, [x + dx, y + dy, x + w + dx, y + h + dy]))
        for cell in cells[10: 10 + rng.integers(0, 3)]:  # false positives in cells without boxes
            x, y = 100 * (cell % 4) + 20, 100 * (cell // 4) + 20
            dets.append((image_id, int(rng.integers(0, num_classes)), [x, y, x + 40, y + 40]))
    scores = rng.permutation(len(dets)) / len(dets) + 0.01
    cats = [{"id": k + 1, "name": f"c{k}"} for k in range(num_classes)]
    return {"images": images, "annotations": gts, "categories": cats}, [(*d, s) for d, s in zip(dets, scores)]


def test_voc_matching_agrees_with_pycocotools_ap50():
    """Where the definitions agree (no difficult or crowd boxes, at most one box per detection, no
    IoU at the threshold), the VOC precision/recall curve read at COCO's 101 recall points is
    exactly pycocotools' AP50."""
    records, dets = random_case()
    gt_coco = coco_index(records)
    results = [{"image_id": i, "category_id": c + 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s}
               for i, c, b, s in dets]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(gt_coco, gt_coco.loadRes(results), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
    for k in range(2):
        gt = {}
        for a in records["annotations"]:
            if a["category_id"] == k + 1:
                x, y, w, h = a["bbox"]
                boxes, _ = gt.setdefault(a["image_id"], ([], None))
                boxes.append([x, y, x + w, y + h])
        gt = {i: (np.array(b), np.zeros(len(b), bool)) for i, (b, _) in gt.items()}
        mine = [d for d in dets if d[1] == k]
        recall, precision, _ = precision_recall(np.array([d[0] for d in mine]), np.array([d[3] for d in mine]),
                                                np.array([d[2] for d in mine]), gt, 0.5)
        ours = point_interpolated_ap(recall, precision, coco_eval.params.recThrs)
        theirs = coco_eval.eval["precision"][0, :, k, 0, -1].mean()
        assert 0.3 < theirs < 0.95 and ours == pytest.approx(theirs, abs=1e-9)


def test_check_data_tool_lists_problems_and_fails_on_fatal(voc_root):
    with open(os.path.join(voc_root, "VOC2007", "Annotations", "000003.xml"), "w") as f:
        f.write(xml_text("000003", [("car", 40, 30, 80, 47, 0)]))  # past the right edge of the 64 px image
    with open(os.path.join(voc_root, "VOC2007", "JPEGImages", "000004.jpg"), "r+b") as f:
        f.truncate(300)
    tool = [sys.executable, str(PROJECT_ROOT / "tools" / "check_data.py"), "data=voc07", f"data.root={voc_root}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok = subprocess.run(tool, capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "000003.xml: object 1 ('car'" in ok.stdout and "box_outside_image" in ok.stdout
    assert "000004.jpg" in ok.stdout and "truncated JPEG" in ok.stdout
    assert "train: 3 images usable" in ok.stdout
    bad = subprocess.run([*tool, "data.checks.truncated_image=fail", "runtime.num_threads=1"], capture_output=True,
                         text=True, env=env, timeout=120)  # every tool takes the runtime node
    assert bad.returncode == 1 and "stops before training" in bad.stdout and "000004.jpg" in bad.stdout


def test_class_names_come_from_the_data_config():
    from detectres.data.build import dataset_class_names

    assert dataset_class_names(compose_config("train", ["data=voc07"]).data) == list(VOC_CLASSES)
    coco8 = dataset_class_names(compose_config("train", ["data=coco8"]).data)
    assert len(coco8) == 80 and coco8[0] == "person" and coco8[-1] == "toothbrush"


def test_prediction_default_input_for_voc_is_its_jpeg_folder(voc_root):
    from detectres.apps.predict import validation_image_folder

    cfg = compose_config("train", ["data=voc07", f"data.root={voc_root}"])
    folder = validation_image_folder(cfg.data.val)
    assert folder == os.path.join(voc_root, "VOC2007", "JPEGImages") and len(os.listdir(folder)) == 4


def test_voc_precision_recall_curves_for_the_plots():
    """The VOC evaluator gives the plots COCO's layout: best precision at each of 101 recall points."""
    import numpy as np

    from detectres.evaluation.voc import RECALL_POINTS, curve_table, interpolated_precision

    recall, precision = np.array([0.1, 0.2, 0.2, 0.5]), np.array([1.0, 0.5, 0.66, 0.4])
    p = interpolated_precision(recall, precision)
    assert p.shape == RECALL_POINTS.shape
    assert p[[0, 10, 11, 20, 21, 50, 51, 100]].tolist() == [1.0, 1.0, 0.66, 0.66, 0.4, 0.4, 0.0, 0.0]
    assert interpolated_precision(np.array([]), np.array([])).tolist() == [0.0] * 101
    curves = np.full((10, 2, 101), np.nan)
    curves[:, 0] = p
    table = curve_table(curves, ["a", "b"])
    assert table["precision"]["0.5"][0][:2] == [1.0, 1.0] and table["precision"]["0.5:0.95"][1][0] is None


def test_nothing_to_train_on_names_the_unknown_categories_and_the_key(tmp_path):
    """VOC files whose objects are not VOC's classes: the error says so (not the filter_empty hint)."""
    from detectres.data.checks import DataCheckError

    root = write_voc(tmp_path, "VOC2007", [("000001", [("lorry", 5, 5, 24, 20, 0)]),
                                           ("000002", [("scooter", 5, 5, 24, 20, 0)])])
    with pytest.raises(DataCheckError, match=r"dropped by the data checks: 2 unknown_category\); the objects' "
                                             r"categories 'lorry', 'scooter' are not in the class list: set "
                                             r"data.class_names"):
        VOCDataset(root=root, image_sets=["VOC2007/trainval"], filter_empty=True)
