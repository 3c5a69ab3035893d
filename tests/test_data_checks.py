"""Bad input of every kind: the message names the file or id, the policy is applied, the good data is
kept, and training goes on (or, for a 'fail' policy, stops before the first iteration)."""
import json
import math
import os

import cv2
import numpy as np
import pytest

from detectres.apps.train import train
from detectres.config import compose_config
from detectres.data.checks import PROBLEM_KINDS, DataCheckError, resolve_policies, scan_level
from detectres.data.datasets.coco import COCODataset
from detectres.data.samples import DetectionSamples

NAMES = ["a.png", "b.png", "c.png", "d.png"]


def good_records():
    """Four 48x64 images, two objects each (annotation ids 1..8)."""
    images = [{"id": i + 1, "file_name": n, "width": 64, "height": 48} for i, n in enumerate(NAMES)]
    anns = []
    for im in images:
        anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": 1, "bbox": [4, 4, 20, 16],
                     "iscrowd": 0, "area": 320})
        anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": 2, "bbox": [34, 20, 24, 20],
                     "iscrowd": 0, "area": 480})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "disc"}]}


def write_set(root, records):
    os.makedirs(root / "img", exist_ok=True)
    for name in NAMES:
        image = np.full((48, 64, 3), 60, np.uint8)
        cv2.rectangle(image, (4, 4), (23, 19), (0, 200, 255), -1)
        cv2.circle(image, (46, 30), 10, (255, 80, 0), -1)
        cv2.imwrite(str(root / "img" / name), image)
    (root / "ann.json").write_text(json.dumps(records))
    return str(root / "img"), str(root / "ann.json")


def train_overrides(img_dir, ann, out, *extra):
    return ["data=custom", f"data.train.image_dir={img_dir}", f"data.train.ann_file={ann}",
            f"data.val.image_dir={img_dir}", f"data.val.ann_file={ann}", "data.num_workers=0",
            "input.min_size_train=[48]", "input.max_size_train=64", "input.min_size_test=48", "input.max_size_test=64",
            f"runtime.output_dir={out}", "solver.ims_per_batch=2", "solver.max_iter=2",
            "solver.lr_scheduler.warmup_iters=1", "solver.lr_scheduler.steps=[1]", "vis_images=0",
            "runtime.num_threads=1", *extra]


def corrupt(path):
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40 + b"IEND\xaeB`\x82")  # looks complete, decodes to nothing


def truncate(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


# (kind, change to the records, change to the files, checks, where the message points, images, annotations kept)
def _drop_size(r):
    del r["images"][1]["width"]


def _duplicate_image(r):
    r["images"][3]["id"] = 3
    for a in r["annotations"]:
        a["image_id"] = min(a["image_id"], 3)


CASES = [
    ("bad_image_entry", _drop_size, None, {}, "image id 2 (b.png)", 4, 8),
    ("duplicate_image_id", _duplicate_image, None, {}, "image id 3", 2, 4),
    ("missing_image", None, lambda d: os.remove(os.path.join(d, "c.png")), {}, "c.png", 3, 6),
    ("unreadable_image", None, lambda d: corrupt(os.path.join(d, "c.png")), {"scan": "decode"}, "c.png", 3, 6),
    ("truncated_image", None, lambda d: truncate(os.path.join(d, "c.png")), {"scan": "header"}, "c.png", 3, 6),
    ("size_mismatch", lambda r: r["images"][2].update(width=128, height=96), None, {"scan": "header"},
     "c.png (image id 3)", 3, 6),
    ("orphan_annotation", lambda r: r["annotations"].append({**r["annotations"][0], "id": 9, "image_id": 99}), None,
     {}, "annotation id 9", 4, 8),
    ("duplicate_annotation_id", lambda r: r["annotations"][1].update(id=1), None, {}, "annotation id 1", 4, 8),
    ("unknown_category", lambda r: r["annotations"][2].update(category_id=7), None, {}, "annotation id 3", 4, 7),
    ("malformed_box", lambda r: r["annotations"][2].update(bbox=[1, 2, "wide", 4]), None, {}, "annotation id 3", 4, 7),
    ("nonpositive_box", lambda r: r["annotations"][3].update(bbox=[30, 20, 0, 10]), None, {}, "annotation id 4", 4, 7),
    ("box_outside_image", lambda r: r["annotations"][4].update(bbox=[50, 30, 40, 10]), None, {}, "annotation id 5",
     4, 8),
]


def make_case(tmp_path, change_records, change_files):
    records = good_records()
    if change_records:
        change_records(records)
    img_dir, ann = write_set(tmp_path, records)
    if change_files:
        change_files(img_dir)
    return img_dir, ann


def test_cases_cover_every_kind_but_the_coco_json():
    assert {c[0] for c in CASES} | {"malformed_file"} == set(PROBLEM_KINDS)  # malformed_file: its own tests
    assert len(PROBLEM_KINDS) >= 12


@pytest.mark.parametrize("kind, change_records, change_files, checks, where, images, anns", CASES,
                         ids=[c[0] for c in CASES])
def test_problem_is_reported_handled_and_training_continues(tmp_path, kind, change_records, change_files, checks,
                                                            where, images, anns):
    img_dir, ann = make_case(tmp_path, change_records, change_files)
    ds = COCODataset(image_dir=img_dir, ann_file=ann, checks=checks)
    assert [p.kind for p in ds.report.problems] == [kind], ds.report.summary()
    problem = ds.report.problems[0]
    assert where in str(problem) and (ann in str(problem) or img_dir in str(problem))
    assert len(ds) == images and len(ds.coco.anns) == anns  # the rest is kept
    assert len({a["id"] for a in ds.coco.dataset["annotations"]}) == anns  # ids unique for COCOeval
    assert kind in ds.report.summary()
    results = train(compose_config("train", train_overrides(
        img_dir, ann, tmp_path / "out", *[f"data.checks.{k}={v}" for k, v in checks.items()])))
    assert "AP50" in results and os.path.isfile(tmp_path / "out" / "model_final.pth")


def test_repairs_are_what_the_policy_says(tmp_path):
    records = good_records()
    records["images"][2].update(width=128, height=96)  # annotated at twice the file's size
    records["annotations"][4].update(bbox=[100, 60, 40, 20])  # on c.png, past the annotated right edge (128)
    records["annotations"][6].update(bbox=[70, 50, 5, 5])  # wholly outside d.png: cannot be clipped
    records["annotations"][7].update(bbox=[34.0, 20.0, 30.5, 28.4])  # 0.5 px over: clipped without a report
    img_dir, ann = write_set(tmp_path, records)
    ds = COCODataset(image_dir=img_dir, ann_file=ann, checks={"scan": "header", "size_mismatch": "fix"})
    kinds = {(p.kind, p.action) for p in ds.report.problems}
    assert kinds == {("size_mismatch", "fix"), ("box_outside_image", "fix"), ("box_outside_image", "drop_annotation")}
    assert ds.coco.anns[5]["bbox"] == [50.0, 30.0, 14.0, 10.0]  # clipped to 128 px, then halved to the file's size
    assert 7 not in ds.coco.anns
    assert ds.coco.anns[8]["bbox"] == [34.0, 20.0, 30.0, 28.0]
    assert ds.coco.imgs[3]["width"] == 64 and DetectionSamples(records=ds)[2]["image"].shape == (3, 48, 64)


def test_fatal_policy_stops_before_the_first_iteration(tmp_path):
    records = good_records()
    records["annotations"][4].update(bbox=[50, 30, 40, 10])
    records["annotations"][6].update(category_id=42)
    img_dir, ann = write_set(tmp_path, records)
    out = tmp_path / "out"
    cfg = compose_config("train", train_overrides(img_dir, ann, out, "data.checks.box_outside_image=fail",
                                                  "data.checks.unknown_category=fail"))
    with pytest.raises(DataCheckError) as err:
        train(cfg)
    message = str(err.value)
    assert "2 problem(s) with policy 'fail'" in message
    assert "annotation id 5" in message and "annotation id 7" in message and "ann.json" in message
    assert not os.path.exists(out / "model_final.pth") and not os.path.exists(out / "metrics.jsonl")


def test_a_file_listed_twice_is_a_duplicate(tmp_path):
    records = good_records()
    records["images"][3]["file_name"] = "c.png"  # ids 3 and 4 both name c.png
    img_dir, ann = write_set(tmp_path, records)
    ds = COCODataset(image_dir=img_dir, ann_file=ann)
    [problem] = ds.report.problems
    assert problem.kind == "duplicate_image_id" and "file c.png" in str(problem) and "ids 3, 4" in str(problem)
    assert len(ds) == 2 and len(ds.coco.anns) == 4


def test_fatal_image_policy_reads_the_files_at_load(tmp_path):
    img_dir, ann = make_case(tmp_path, None, lambda d: corrupt(os.path.join(d, "b.png")))
    assert scan_level("exists", resolve_policies({"unreadable_image": "fail"})) == "decode"
    assert scan_level("exists", resolve_policies({"size_mismatch": "fix"})) == "header"  # boxes rescaled at load
    with pytest.raises(DataCheckError, match=r"b.png .*unreadable_image, fatal"):
        COCODataset(image_dir=img_dir, ann_file=ann, checks={"unreadable_image": "fail"})


def test_image_that_fails_during_training_is_skipped_and_counted(tmp_path, caplog):
    img_dir, ann = make_case(tmp_path, None, None)
    records = COCODataset(image_dir=img_dir, ann_file=ann)  # loads fine: the files are only stat'ed
    corrupt(os.path.join(img_dir, "b.png"))               # ... and one breaks before it is read
    ds = DetectionSamples(records=records, substitute_bad_images=True)
    item = ds[1]
    assert item["file_name"].endswith("c.png") and "b.png" in item["skipped"][0]
    assert "unreadable_image" in item["skipped"][0]
    assert "skipped" not in ds[1 + 1] and ds[1]["file_name"].endswith("c.png")  # remembered, not retried
    evaluation = DetectionSamples(records=records)  # evaluation: a stub, left out of scoring
    for _ in range(2):  # every time, never the next image in its place
        assert set(evaluation[1]) == {"image_id", "file_name", "skipped"} and evaluation[1]["image_id"] == 2
    assert evaluation[2]["file_name"].endswith("c.png") and "skipped" not in evaluation[2]

    out = tmp_path / "out"
    overrides = [o if o != "vis_images=0" else "vis_images=4" for o in train_overrides(img_dir, ann, out)]
    results = train(compose_config("train", [*overrides, "solver.max_iter=4"]))
    assert os.path.isfile(out / "model_final.pth")
    assert results["skipped_images"] == 1  # the evaluation left it out
    assert sorted(os.listdir(out / "vis")) == ["a.jpg", "c.jpg", "d.jpg"]  # drawing skips it too
    assert "image(s) failed to load during training and were skipped" in caplog.text and "b.png" in caplog.text


@pytest.mark.parametrize("text, message", [
    ("{not json", "line 1, column 2"),
    (json.dumps({"images": [], "annotations": []}), "'categories' must be a non-empty list"),
    (json.dumps([1, 2]), "expected a JSON object"),
    (json.dumps({"images": {}, "annotations": [], "categories": [{"id": 1, "name": "x"}]}), "'images' must be a list"),
    ('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested too deeply"),
])
def test_malformed_coco_file_stops_naming_it(tmp_path, text, message):
    (tmp_path / "ann.json").write_text(text)
    with pytest.raises(DataCheckError, match=message) as err:
        COCODataset(image_dir=str(tmp_path), ann_file=str(tmp_path / "ann.json"))
    assert "ann.json" in str(err.value)


def test_non_finite_numbers_from_json_are_malformed_boxes(tmp_path):
    records = good_records()
    records["annotations"][0]["bbox"] = [1, 2, math.nan, 4]  # json writes NaN, Python's reader accepts it
    img_dir, ann = write_set(tmp_path, records)
    ds = COCODataset(image_dir=img_dir, ann_file=ann)
    assert [(p.kind, p.action) for p in ds.report.problems] == [("malformed_box", "drop_annotation")]


def test_unknown_policy_keys_and_values_are_named():
    with pytest.raises(KeyError, match="data.checks.box_outsde: unknown problem kind"):
        resolve_policies({"box_outsde": "fix"})
    with pytest.raises(ValueError, match="data.checks.missing_image='fix' is not allowed; choose one of skip_image"):
        resolve_policies({"missing_image": "fix"})


def test_paths_that_do_not_exist_are_named(tmp_path):
    img_dir, ann = write_set(tmp_path, good_records())
    with pytest.raises(FileNotFoundError, match="nope.json"):
        COCODataset(image_dir=img_dir, ann_file=str(tmp_path / "nope.json"))
    with pytest.raises(FileNotFoundError, match="image directory not found"):
        COCODataset(image_dir=str(tmp_path / "missing"), ann_file=ann)


def test_check_data_never_writes_its_report_over_the_annotations(tmp_path):
    from detectres.apps.check_data import check_data

    img_dir, ann = write_set(tmp_path, good_records())
    before = open(ann).read()
    data = ["data=custom", f"data.train.image_dir={img_dir}", f"data.train.ann_file={ann}",
            f"data.val.image_dir={img_dir}", f"data.val.ann_file={ann}"]
    with pytest.raises(ValueError, match="output would write .*ann.json over the input"):
        check_data(compose_config("check_data", [*data, f"output={ann}"]))
    assert open(ann).read() == before
    assert check_data(compose_config("check_data", [*data, f"output={tmp_path / 'report.json'}"])) == 0
    assert json.loads((tmp_path / "report.json").read_text())["train"]["usable_images"] == 4


def test_check_data_draws_what_training_is_fed_and_a_mosaic(shapes_overrides, tmp_path):
    """draw=N: N training samples after the training transforms (their multi-scale sizes, each box inside
    its image), N validation images as they are, one mosaic per split; never into the image folder."""
    from detectres.apps.check_data import check_data
    from detectres.config.builder import build
    from detectres.data.build import train_transforms

    over = [*shapes_overrides, "draw=6", "scan=exists", f"runtime.output_dir={tmp_path / 'look'}"]
    cfg = compose_config("check_data", over)
    assert check_data(cfg) == 0
    train = sorted((tmp_path / "look" / "train").iterdir())
    val = sorted((tmp_path / "look" / "val").iterdir())
    assert len(train) == 6 and len(val) == 6
    sizes = {cv2.imread(str(p)).shape[0] for p in train}
    assert sizes <= {160, 176, 192, 208, 224} and {cv2.imread(str(p)).shape[:2] for p in val} == {(128, 128)}
    for split in ("train", "val"):
        assert cv2.imread(str(tmp_path / "look" / f"{split}_mosaic.png")) is not None
    # what was drawn is the sample training gets (sample i with seed i), boxes inside the image
    records = build(cfg.data.train, "data.train")
    sample = DetectionSamples(records=records, transforms=train_transforms(cfg))[(0, 0)]
    h, w = sample["image"].shape[1:]
    assert cv2.imread(str(train[0])).shape[:2] == (h, w)
    boxes = sample["gt_boxes"]
    assert len(boxes) and (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    image_dir = os.path.dirname(records.image_path(records.image_ids[0]))
    with pytest.raises(ValueError, match="would put drawn samples into .*a folder of the train images"):
        check_data(compose_config("check_data", [*over[:-1], f"runtime.output_dir={os.path.dirname(image_dir)}",
                                                 "data.train.image_dir=" + image_dir]))
