"""The confusion matrix and the score-threshold curves every evaluation writes: each ground-truth box counted
once, confusions and misses where they belong, and on a trained checkpoint rows that sum to the
ground-truth counts per class."""
import json
import os

import numpy as np
import pytest

from detectres.evaluation.confusion import confusion_matrix, threshold_curves


def image(gt, dets, ignored=None):
    """gt: [(class, x1, y1, x2, y2)]; dets: [(class, score, x1, y1, x2, y2)]."""
    g = np.array([b[1:] for b in gt], float).reshape(-1, 4)
    d = np.array([b[2:] for b in dets], float).reshape(-1, 4)
    return (g, np.array([b[0] for b in gt], int), np.array(ignored or [False] * len(gt)), d,
            np.array([b[1] for b in dets], float), np.array([b[0] for b in dets], int))


def test_each_box_is_counted_once_and_every_miss_and_confusion_lands_where_it_belongs():
    images = [
        image([(0, 0, 0, 10, 10), (1, 20, 20, 30, 30)],
              [(0, 0.9, 0, 0, 10, 10),         # right
               (0, 0.8, 0, 0, 10, 10),         # a duplicate: its box is taken, so it detected nothing
               (2, 0.7, 20, 20, 30, 30),       # class 1 seen as class 2
               (1, 0.3, 50, 50, 60, 60)]),     # below conf_thresh: not counted
        image([(2, 0, 0, 10, 10), (0, 40, 40, 50, 50)], [(0, 0.6, 40, 40, 50, 50)]),   # the class-2 box missed
        image([(1, 0, 0, 10, 10)], [(1, 0.9, 0, 0, 10, 10)], ignored=[True]),            # a crowd box: not counted
    ]
    m = confusion_matrix(images, num_classes=3, iou=0.5, conf_thresh=0.5)
    expected = np.zeros((4, 4), int)
    expected[0, 0] = 2          # two right class-0 detections
    expected[3, 0] = 1          # the duplicate
    expected[1, 2] = 1          # the confusion
    expected[2, 3] = 1          # the missed class-2 box
    np.testing.assert_array_equal(m, expected)
    assert m[:3].sum(axis=1).tolist() == [2, 1, 1]  # = the non-crowd ground-truth boxes per class


def test_threshold_curves_name_the_threshold_with_the_best_f1():
    gt = [(0, 0, 0, 10, 10), (0, 20, 0, 30, 10), (0, 40, 0, 50, 10)]
    dets = [(0, 0.95, 0, 0, 10, 10), (0, 0.9, 20, 0, 30, 10), (0, 0.6, 70, 0, 80, 10), (0, 0.4, 40, 0, 50, 10)]
    curves = threshold_curves([image(gt, dets)])
    at = {t: i for i, t in enumerate(curves["thresholds"])}
    assert curves["precision"][at[0.9]] == 1.0 and curves["recall"][at[0.9]] == pytest.approx(2 / 3, abs=1e-5)
    assert curves["precision"][at[0.4]] == 0.75 and curves["recall"][at[0.4]] == 1.0
    assert curves["best"]["threshold"] == 0.0 and curves["best"]["f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert curves["f1"][at[0.61]] == pytest.approx(0.8, abs=1e-5)  # precision 1, recall 2/3


def test_an_evaluation_writes_the_confusion_matrix_and_the_best_f1_threshold(tiny_trained, shapes_overrides, tmp_path):
    from detectres.apps.evaluate import evaluate
    from detectres.config import compose_config
    from detectres.config.builder import build

    over = [f"checkpoint={os.path.join(tiny_trained, 'model_final.pth')}", f"runtime.output_dir={tmp_path}",
            "runtime.num_threads=1"]
    cfg = compose_config("eval", over)
    results = evaluate(cfg, over)
    confusion = json.load(open(tmp_path / "confusion_matrix.json"))
    records = build(compose_config("eval", [*over, *shapes_overrides]).data.val, "data.val")  # what it scored
    assert confusion["classes"] == [*records.class_names, "background"] and confusion["conf_thresh"] == 0.5
    gt_counts = np.bincount(records.labels_of(records.boxes)[~records.ignored(records.boxes)],
                            minlength=len(records.class_names))
    assert np.asarray(confusion["matrix"])[:-1].sum(axis=1).tolist() == gt_counts.tolist()
    best = json.load(open(tmp_path / "eval.json"))["best_f1_threshold"]
    assert best == results["best_f1_threshold"] and 0 <= best["threshold"] <= 1
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0 and (tmp_path / "pr_f1.png").stat().st_size > 0
