"""COCO-sized data, fast: the checks that run on whole columns give exactly what the per-entry checks give,
the fast JSON reader gives what Python's does, and the record cache is reused, keyed by content and
policies, shared by concurrent processes, and never fails a run."""
import copy
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from detectres.data import record_cache
from detectres.data.checks import FIX, PROBLEM_KINDS, SKIP, DataReport
from detectres.data.datasets.coco import COCODataset, read_coco_json
from detectres.data.records import (annotation_problem, annotation_where, check_categories, clean_images,
                                    clean_records)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference_annotations(annotations, images, seen_image_ids, category_ids, *, source, report):
    """The per-entry checks as they were before the column checks (one annotation at a time)."""
    by_id = {im["id"]: im for im in images}
    kept, skip_images, used_ids = [], set(), set()
    next_id = 1 + max([a["id"] for a in annotations if isinstance(a, dict) and type(a.get("id")) is int], default=0)
    for ann in annotations:
        if not isinstance(ann, dict):
            report.add("malformed_box", f"{source}: annotation {ann!r}", "is not an object")
            continue
        image = by_id.get(ann.get("image_id"))
        if image is None:
            if ann.get("image_id") not in seen_image_ids:
                report.add("orphan_annotation", annotation_where(ann, None, source),
                           f"image id {ann.get('image_id')!r} has no image entry")
            continue
        kind, detail, box = annotation_problem(ann, image, category_ids)
        if kind:
            action = report.add(kind, annotation_where(ann, image, source), detail, can_fix=box is not None)
            if action == SKIP:
                skip_images.add(image["id"])
            if action != FIX:
                continue
        ann["bbox"] = box
        if type(ann.get("id")) is not int or ann["id"] in used_ids:
            detail = f"id {ann['id']} is used twice" if type(ann.get("id")) is int else "has no integer id"
            if report.add("duplicate_annotation_id", annotation_where(ann, image, source), detail) != FIX:
                continue
            ann["id"], next_id = next_id, next_id + 1
        used_ids.add(ann["id"])
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", box[2] * box[3])
        kept.append(ann)
    return kept, skip_images


def reference_records(records, source, report):
    categories = check_categories(records["categories"], source)
    images, seen = clean_images(records["images"], source=source, image_root="", report=report)
    kept, skip = reference_annotations(records["annotations"], images, seen, {c["id"] for c in categories},
                                       source=source, report=report)
    return [im for im in images if im["id"] not in skip], [a for a in kept if a["image_id"] not in skip]


BOXES = [[2, 3, 10, 8], [2.5, 3.25, 10.5, 8.0], [-0.5, 0, 10, 8], [55, 40, 10, 10], [-30, -30, 5, 5],
         [70, 50, 5, 5], [1, 1, 0, 5], [1, 1, 5, -2], [1, 2, "wide", 4], [1, 2, 3], [True, 1, 2, 3], None,
         [1, 2, 3, 4, 5], [0, 0, 64, 48], [0, 0, 64.9, 48.9], [1e308, 1e308, 1e308, 1e308]]


def random_records(rng):
    """Images (some with a bad size, a repeated id or file) and annotations with every annotation problem."""
    images = [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 48} for i in range(1, 9)]
    images[int(rng.integers(8))]["width"] = -1 if rng.random() < 0.5 else 64
    if rng.random() < 0.3:
        images[7]["id"] = 6
    anns = []
    for k in range(int(rng.integers(0, 60))):
        ann = {"id": int(rng.integers(1, 40)) if rng.random() < 0.9 else "x",
               "image_id": int(rng.integers(1, 11)), "category_id": int(rng.choice([1, 2, 2, 7])),
               "bbox": copy.deepcopy(BOXES[int(rng.integers(len(BOXES)))])}
        if rng.random() < 0.5:
            ann["iscrowd"] = int(rng.random() < 0.2)
        if rng.random() < 0.5:
            ann["area"] = float(rng.uniform(1, 100))
        anns.append(ann if rng.random() > 0.02 else 5)
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def random_policies(rng):
    kinds = ["orphan_annotation", "duplicate_annotation_id", "unknown_category", "malformed_box", "nonpositive_box",
             "box_outside_image", "duplicate_image_id"]
    return {k: str(rng.choice([p for p in PROBLEM_KINDS[k].policies if p != "fail"])) for k in kinds}


def as_rows(anns):
    return sorted((a["id"], a["image_id"], a["category_id"], tuple(float(v) for v in a["bbox"]), float(a["area"]),
                   int(bool(a["iscrowd"]))) for a in anns)


def problems(report):
    return sorted((p.kind, p.where, p.detail, p.action) for p in report.problems)


def test_the_column_checks_give_exactly_what_the_per_entry_checks_give(tmp_path):
    rng = np.random.default_rng(0)
    for trial in range(150):
        records, policies = random_records(rng), random_policies(rng)
        expected_report, report = DataReport("ann.json", policies), DataReport("ann.json", policies)
        images, anns = reference_records(copy.deepcopy(records), "ann.json", expected_report)
        got = clean_records(copy.deepcopy(records), source="ann.json", image_root="", report=report)
        assert problems(report) == problems(expected_report), trial
        assert got.images == images and as_rows(got.boxes.to_dicts()) == as_rows(anns), trial
        path = tmp_path / "ann.json"  # the same records through the fast reader (typed rows, not dicts)
        path.write_text(json.dumps(records))
        fast_report = DataReport("ann.json", policies)
        fast = clean_records(read_coco_json(str(path)), source="ann.json", image_root="", report=fast_report)
        assert problems(fast_report) == problems(expected_report), trial
        assert as_rows(fast.boxes.to_dicts()) == as_rows(anns), trial


def write_set(root, n=30):
    import cv2

    os.makedirs(root / "img", exist_ok=True)
    cv2.imwrite(str(root / "img" / "0.png"), np.zeros((48, 64, 3), np.uint8))
    images = [{"id": i, "file_name": "0.png" if i == 0 else f"{i}.png", "width": 64, "height": 48} for i in range(n)]
    for im in images[1:-1]:  # the last one is missing
        os.link(root / "img" / "0.png", root / "img" / im["file_name"])
    anns = [{"id": k + 1, "image_id": k % n, "category_id": 1 + k % 2, "bbox": [k % 50, 2, 10, 60 if k == 3 else 8]}
            for k in range(3 * n)]  # annotation 4 overshoots its image
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                               "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    return str(root / "img"), str(root / "ann.json")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(record_cache, "MIN_BYTES", 0)
    return tmp_path / "cache" / "records"


def summary(ds):
    return (ds.identity()["digest"], problems(ds.report), as_rows(ds.coco.dataset["annotations"]), ds.image_ids)


def test_a_second_build_reads_the_cache_and_gets_the_same_dataset(tmp_path, cache, caplog):
    caplog.set_level(logging.INFO)
    img, ann = write_set(tmp_path)
    first = COCODataset(image_dir=img, ann_file=ann, filter_empty=True)
    assert "record cache" not in caplog.text and len(list(cache.glob("*.npz"))) == 1
    assert {p.kind for p in first.report.problems} == {"box_outside_image", "missing_image"}
    second = COCODataset(image_dir=img, ann_file=ann, filter_empty=True)
    assert "read from the record cache" in caplog.text
    assert summary(second) == summary(first)
    assert np.array_equal(second.annotations(5)[0], first.annotations(5)[0])
    other = COCODataset(image_dir=img, ann_file=ann, checks={"box_outside_image": "drop_annotation"})
    assert len(list(cache.glob("*.npz"))) == 2 and len(other.coco.anns) == len(first.coco.anns) - 1  # policies key it
    os.remove(os.path.join(img, "5.png"))  # image files are looked at every run
    assert 5 not in COCODataset(image_dir=img, ann_file=ann).image_ids


def test_only_the_most_recently_used_record_files_are_kept(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(record_cache, "KEEP", 2)
    img, ann = write_set(tmp_path)
    for policy in ["fix", "drop_annotation", "skip_image"]:
        COCODataset(image_dir=img, ann_file=ann, checks={"box_outside_image": policy})
    assert len(list(cache.glob("*.npz"))) == 2


def test_changed_content_is_checked_again(tmp_path, cache):
    img, ann = write_set(tmp_path)
    COCODataset(image_dir=img, ann_file=ann)
    records = json.loads(open(ann).read())
    records["annotations"][0]["category_id"] = 9
    with open(ann, "w") as f:
        json.dump(records, f)
    ds = COCODataset(image_dir=img, ann_file=ann)
    assert "unknown_category" in {p.kind for p in ds.report.problems}


def test_a_damaged_cache_is_checked_again_and_replaced(tmp_path, cache, caplog):
    img, ann = write_set(tmp_path)
    expected = summary(COCODataset(image_dir=img, ann_file=ann))
    [path] = cache.glob("*.npz")
    path.write_bytes(b"PK\x03\x04 not a zip")
    assert summary(COCODataset(image_dir=img, ann_file=ann)) == expected
    assert "is unreadable" in caplog.text
    assert summary(COCODataset(image_dir=img, ann_file=ann)) == expected  # rewritten


def test_an_unwritable_cache_never_fails_a_run(tmp_path, cache, caplog):
    img, ann = write_set(tmp_path)
    expected = summary(COCODataset(image_dir=img, ann_file=ann))
    for p in cache.rglob("*"):
        if p.is_file():
            p.unlink()
    os.chmod(cache, 0o500)
    try:
        if os.access(cache, os.W_OK):
            pytest.skip("root writes anywhere")
        assert summary(COCODataset(image_dir=img, ann_file=ann)) == expected
        assert "record cache not written" in caplog.text
    finally:
        os.chmod(cache, 0o700)


BUILD = """
import logging, sys
from detectres.data import record_cache
from detectres.data.datasets.coco import COCODataset
record_cache.MIN_BYTES = 0
checked = []
real = record_cache.write_cache
record_cache.write_cache = lambda *a: (checked.append(1), real(*a))
ds = COCODataset(image_dir=sys.argv[1], ann_file=sys.argv[2])
print("built" if checked else "read", ds.identity()["digest"])
"""


def test_concurrent_processes_check_once_and_share_the_records(tmp_path, cache):
    img, ann = write_set(tmp_path, n=400)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, img, ann], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(o[0] for o in outputs) == ["built", "read"]  # one checked, the other waited and read
    assert outputs[0][1] == outputs[1][1]


def test_the_scale_benchmark_runs(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "scale_benchmark.py"), "--images", "300",
                          "--val-images", "40", "--root", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.split()[:1] == ["300"]]
    assert [r[1] for r in rows] == ["first", "second"] and all(float(r[2]) > 0 and float(r[3]) > 0.1 for r in rows)


def test_resume_compares_digests_made_the_same_way_else_the_counts():
    from detectres.engine.checkpoint import data_changed

    new = {"digest": "b" * 64, "digest_format": 2, "images": 4, "annotations": 8}
    assert not data_changed({"digest": "a" * 64, "images": 4, "annotations": 8}, new)  # a checkpoint from before
    assert data_changed({"digest": "a" * 64, "images": 4, "annotations": 9}, new)
    assert data_changed({**new, "digest": "c" * 64}, new) and not data_changed(dict(new), new)


def test_the_digest_names_the_records_not_where_they_live(tmp_path):
    digests = []
    for root in (tmp_path / "a", tmp_path / "b"):
        img, ann = write_set(root)
        digests.append(COCODataset(image_dir=img, ann_file=ann).identity()["digest"])
    records = json.loads(open(ann).read())
    records["annotations"][0]["bbox"][0] += 1
    with open(ann, "w") as f:
        json.dump(records, f)
    digests.append(COCODataset(image_dir=img, ann_file=ann).identity()["digest"])
    assert digests[0] == digests[1] != digests[2]


def test_records_that_needed_image_files_read_are_not_cached(tmp_path, cache):
    img, ann = write_set(tmp_path)
    records = json.loads(open(ann).read())
    del records["images"][2]["width"]  # read from 2.png (the default policy fixes it)
    with open(ann, "w") as f:
        json.dump(records, f)
    ds = COCODataset(image_dir=img, ann_file=ann)
    assert ("bad_image_entry", "fix") in {(p.kind, p.action) for p in ds.report.problems} and 2 in ds.image_ids
    assert not list(cache.glob("*.npz"))


def test_ids_beyond_64_bits_are_reported_not_a_crash(tmp_path):
    records = random_records(np.random.default_rng(1))
    records["annotations"] = [{"id": 2**64, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}]
    records["images"].append({"id": 2**63, "file_name": "big.png", "width": 64, "height": 48})
    report = DataReport("ann.json")
    got = clean_records(records, source="ann.json", image_root="", report=report)
    kinds = {(p.kind, p.detail) for p in report.problems}
    assert ("duplicate_annotation_id", f"id {2**64} does not fit in 64 bits") in kinds
    assert any(k == "bad_image_entry" and "64-bit" in d for k, d in kinds) and len(got.boxes) == 1
