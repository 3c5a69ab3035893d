"""faster-coco-eval (the default COCO scoring engine) gives pycocotools' numbers: all 12 summary numbers
and every per-class AP, to 1e-4, on the real coco8 images and on a random set with crowd boxes,
images without annotations and many classes."""
import json
import os

import numpy as np
import pytest
from pycocotools.coco import COCO

from detectres.apps.scoring_benchmark import noisy_detections, random_ground_truth
from detectres.evaluation.coco import BACKENDS, COCOEvaluator, per_class_ap, score_boxes

COCO8 = os.path.join(os.path.dirname(__file__), "data", "coco8", "annotations", "instances_val.json")


def load_gt(dataset: dict) -> COCO:
    gt = COCO()
    gt.dataset = dataset
    gt.createIndex()
    return gt


def both_engines(gt_dict: dict, dets: list[dict]) -> dict:
    names = [c["name"] for c in gt_dict["categories"]]
    image_ids = [img["id"] for img in gt_dict["images"]]
    out = {}
    for backend in BACKENDS:
        coco_eval, summary = score_boxes(load_gt(json.loads(json.dumps(gt_dict))), json.loads(json.dumps(dets)),
                                         image_ids, backend)
        assert "Average Precision" in summary
        out[backend] = (np.array(coco_eval.stats), per_class_ap(coco_eval, names))
    return out


@pytest.mark.parametrize("source", ["coco8", "random"])
def test_faster_coco_eval_equals_pycocotools(source):
    rng = np.random.default_rng(0)
    gt = json.load(open(COCO8)) if source == "coco8" else random_ground_truth(rng, images=80, classes=40)
    if source == "random":
        assert any(a["iscrowd"] for a in gt["annotations"])
        assert len({a["image_id"] for a in gt["annotations"]}) < len(gt["images"])
    scores = both_engines(gt, noisy_detections(gt, rng, false_per_image=3 if source == "coco8" else 20))
    (fast, fast_classes), (ref, ref_classes) = scores["faster-coco-eval"], scores["pycocotools"]
    assert len(fast) == len(ref) == 12 and 0.05 < ref[0] < 0.95  # a set that is neither trivial nor empty
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-4)
    assert fast_classes.keys() == ref_classes.keys()
    for name, ap in ref_classes.items():
        assert (np.isnan(ap) and np.isnan(fast_classes[name])) or abs(fast_classes[name] - ap) <= 1e-2, name


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="pycocotools"):
        COCOEvaluator(dataset=None, backend="cocoapi")
