"""Detections out as data: predict.py save=json|csv|coco over a folder and a video. One record per image or
frame, the detections Detector.predict gives, and a COCO results file that scores what evaluation scored."""
import csv
import json
import os

import cv2
import numpy as np
import pytest

from detectres.apps.predict import predict
from detectres.config import compose_config
from detectres.predictor import Detector


def run(checkpoint, out, *overrides):
    overrides = [f"checkpoint={checkpoint}", f"runtime.output_dir={out}", "runtime.num_threads=1", *overrides]
    return predict(compose_config("predict", overrides), overrides)


@pytest.fixture(scope="module")
def checkpoint(tiny_trained):
    return os.path.join(tiny_trained, "model_final.pth")


def test_json_and_csv_hold_every_image_and_what_detector_predict_gives(checkpoint, tmp_path):
    detector = Detector.from_checkpoint(checkpoint, device="cpu")
    folder = detector.config.data.val.image_dir
    run(checkpoint, tmp_path / "j", "save=json", "draw=0", "batch_size=3", "score_thresh=0.0")
    records = json.load(open(tmp_path / "j" / "detections.json"))
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    assert [r["file"] for r in records] == files and not (set(os.listdir(tmp_path / "j")) - {"detections.json"})
    for r in records:
        image = cv2.imread(r["file"])
        alone = detector.predict(image)
        assert (r["height"], r["width"]) == image.shape[:2] and len(r["detections"]) == len(alone["scores"])
        for d, box, score, label in zip(r["detections"], alone["boxes"], alone["scores"], alone["labels"]):
            assert np.allclose(d["box"], box, atol=0.01) and d["score"] == pytest.approx(score, abs=1e-5)
            assert d["label"] == label and d["class"] == detector.class_names[label]
    run(checkpoint, tmp_path / "c", "save=csv", "draw=2", "score_thresh=0.0")
    rows = list(csv.DictReader(open(tmp_path / "c" / "detections.csv")))
    assert len(rows) == sum(len(r["detections"]) for r in records) and len(os.listdir(tmp_path / "c")) == 3
    assert float(rows[0]["x2"]) == pytest.approx(records[0]["detections"][0]["box"][2], abs=0.01)


def test_a_video_gives_one_record_per_frame(checkpoint, tmp_path):
    detector = Detector.from_checkpoint(checkpoint, device="cpu")
    folder = detector.config.data.val.image_dir
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (128, 128))
    for name in sorted(os.listdir(folder))[:6]:
        writer.write(cv2.imread(os.path.join(folder, name)))
    writer.release()
    written = run(checkpoint, tmp_path / "v", f"source={video}", "save=json", "draw=1", "batch_size=4")
    records = json.load(open(tmp_path / "v" / "detections.json"))
    assert [r["frame"] for r in records] == list(range(6)) and all(r["file"] == str(video) for r in records)
    assert sorted(os.path.basename(p) for p in written) == ["clip_000000.jpg", "detections.json"]


def test_save_coco_scores_what_the_evaluation_scored(checkpoint, tiny_trained, tmp_path):
    from detectres.config.builder import build
    from detectres.evaluation.coco import score_boxes

    run(checkpoint, tmp_path, "save=coco", "draw=0", "batch_size=4")
    results = json.load(open(tmp_path / "coco_instances_results.json"))
    records = build(Detector.from_checkpoint(checkpoint, device="cpu").config.data.val, "data.val")
    scored, _ = score_boxes(records.coco, results, records.image_ids, "faster-coco-eval")
    training = json.load(open(os.path.join(tiny_trained, "eval.json")))
    assert scored.stats[0] * 100 == pytest.approx(training["AP"], abs=1e-9)
    other = tmp_path / "other"
    other.mkdir()
    cv2.imwrite(str(other / "a.png"), np.full((32, 32, 3), 90, np.uint8))
    with pytest.raises(ValueError, match="save=coco needs source to be the model's COCO-format validation images"):
        run(checkpoint, tmp_path / "x", "save=coco", f"source={other}")
