"""detectres reproduces Detectron2's R50-C4 outputs, stage by stage, from converted weights.

The reference (tests/fixtures/detectron2, made with Detectron2 itself; see its README) used weights
from make_weights.py (seed 0, RPN output std 0.01), POST_NMS_TOPK_TEST=300, SCORE_THRESH_TEST=0.0.
"""
import os
import pickle

import cv2
import numpy as np
import pytest
import torch

from detectres import Detector
from detectres.config import compose_config
from detectres.modeling.build import build_model
from detectres.weights import read_weights, load_weights_into
from detectres.weights.detectron2 import rename_detectron2_key

from detectron2_weights import FIXTURE, all_cores, detectron2_state, write_model_zoo_pkl

OVERRIDES = ["model.rpn.post_nms_topk_test=300", "model.roi_heads.score_thresh=0.0"]


def rel_err(got, ref):
    return float((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1e-12))


def assert_detection_sets_match(ref_boxes, ref_scores, ref_classes, boxes, scores, classes, *, iou, score_tol,
                                coord_tol=0.0):
    """Every reference detection has one of ours of its class, score within ``score_tol`` and IoU >= ``iou``
    (or, given ``coord_tol``, every coordinate within it: the IoU of a box under 1 px thin moves by 1e-3 for
    a 0.0005 px shift)."""
    from torchvision.ops import box_iou

    ious = box_iou(ref_boxes.float(), boxes.float())
    near = (ref_boxes.float()[:, None, :] - boxes.float()[None]).abs().amax(dim=2) <= coord_tol
    for i in range(len(ref_boxes)):
        ok = (classes == ref_classes[i]) & ((ious[i] >= iou) | near[i]) & ((scores - ref_scores[i]).abs() <= score_tol)
        assert ok.any(), (f"reference detection {i} (class {int(ref_classes[i])}, score {float(ref_scores[i]):.5f}, "
                          f"box {ref_boxes[i].tolist()}) has no match")


def match_proposals(ref_boxes, boxes):
    """Logits tie to ~1e-6, so neighbours may swap places: for each reference box, the nearest of ours
    (largest coordinate difference) and its index."""
    dist = (ref_boxes[:, None, :] - boxes[None, :, :]).abs().amax(dim=2)
    return dist.min(dim=1)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Detectron2-named weights written as a model-zoo style .pkl (numpy arrays) and read back."""
    return write_model_zoo_pkl(tmp_path_factory.mktemp("d2") / "model_final_fixture.pkl")


@pytest.fixture(scope="module")
def staged(converted):
    return run_staged(converted)


def run_staged(converted: str):
    """Run detectres stage by stage on the fixture's resized input."""
    cfg = compose_config("train", ["model=r50_c4", *OVERRIDES])
    model = build_model(cfg.model, num_classes=80).eval()
    load_weights_into(model, read_weights(converted), source=converted)
    ref = torch.load(os.path.join(FIXTURE, "ref_R50_C4.pt"), weights_only=True)
    hwc = torch.load(os.path.join(FIXTURE, "ref_R50_C4_input.pt"), weights_only=True)["input_resized_uint8_bgr_hwc"]
    inputs = [{"image": torch.as_tensor(hwc).permute(2, 0, 1), "height": int(ref["orig_hw"][0]),
               "width": int(ref["orig_hw"][1])}]
    out = {}
    with torch.no_grad(), all_cores():
        images = model.preprocess(inputs)
        out["input"] = images.tensor
        feats = model.backbone(images.tensor)
        out["res4"] = feats
        out["rpn_logits"], out["rpn_deltas"] = model.rpn.head(feats)
        boxes, logits = model.rpn.proposals_with_logits(feats, images.image_sizes)
        out["proposals"], out["proposal_logits"] = boxes[0], logits[0]
        out["match"] = match_proposals(ref["proposal_boxes"], boxes[0])
        out["box_features"] = model.roi_heads.box_features(feats, boxes, images.image_sizes)
        out["cls"], out["deltas"] = model.roi_heads.box_predictor(out["box_features"])
        out["detections"] = model.inference(inputs)[0]
    return out, ref


def test_weights_are_the_fixtures():
    import hashlib

    state = detectron2_state()
    digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in state.values())).hexdigest()
    assert digest == "b7806c8af050d9ba1d78a8a7f3824816933b9f04727edb5cbe698263706b63e8"


def test_input_and_res4_match(staged):
    out, ref = staged
    x = out["input"]
    assert tuple(x.shape) == tuple(ref["input_tensor_shape"].tolist())
    assert abs(float(x.mean()) - float(ref["input_norm_mean"])) < 1e-3 * abs(float(ref["input_norm_mean"]))
    assert rel_err(x[:, :, :8, :8], ref["input_norm_slice_0_0_8x8"]) < 1e-6
    r4 = out["res4"]
    assert tuple(r4.shape) == tuple(ref["res4_shape"].tolist())
    for stat, value in (("mean", r4.mean()), ("std", r4.std()), ("absmax", r4.abs().max())):
        assert abs(float(value) - float(ref[f"res4_{stat}"])) <= 1e-3 * abs(float(ref[f"res4_{stat}"])), stat
    assert rel_err(r4[:, :, :8, :8], ref["res4_slice_1x1024x8x8"]) < 1e-3


def test_rpn_outputs_and_proposals_match(staged):
    out, ref = staged
    assert rel_err(out["rpn_logits"], ref["rpn_objectness_logits"]) < 1e-3
    assert rel_err(out["rpn_deltas"], ref["rpn_anchor_deltas"]) < 1e-3
    assert out["proposals"].shape == ref["proposal_boxes"].shape == (300, 4)
    nearest, idx = out["match"]
    assert float(nearest.max()) < 0.01
    assert len(set(idx.tolist())) == 300  # one-to-one
    assert float((idx - torch.arange(300)).abs().max()) <= 1  # at most neighbours swapped
    assert rel_err(out["proposal_logits"][idx], ref["proposal_objectness_logits"]) < 1e-3


def test_box_head_matches(staged):
    out, ref = staged
    feats = out["box_features"]
    assert abs(float(feats.mean()) - float(ref["box_features_mean"])) < 1e-3 * float(ref["box_features_mean"])
    assert abs(float(feats.std()) - float(ref["box_features_std"])) < 1e-3 * float(ref["box_features_std"])
    idx = out["match"][1]  # our row for each reference proposal
    assert rel_err(out["cls"][idx], ref["box_cls_logits"]) < 1e-3
    assert rel_err(out["deltas"][idx], ref["box_deltas"]) < 1e-3


def test_detections_match_as_a_set(staged):
    out, ref = staged
    det = out["detections"]
    assert len(det["scores"]) == len(ref["det_scores"]) == 100
    assert_detection_sets_match(ref["det_boxes"], ref["det_scores"], ref["det_classes"],
                                det["pred_boxes"], det["scores"], det["pred_classes"], iou=0.999, score_tol=1e-4)


def test_full_pipeline_from_jpeg(converted):
    """As a user calls it: img.jpg through detectres' own resize and Detector.predict."""
    ref = torch.load(os.path.join(FIXTURE, "ref_R50_C4.pt"), weights_only=True)
    det = Detector.from_config("r50_c4", weights=converted, overrides=OVERRIDES, device="cpu")
    assert det.class_names[0] == "person" and len(det.class_names) == 80
    with all_cores():
        out = det.predict(cv2.imread(os.path.join(FIXTURE, "img.jpg")))
    assert_detection_sets_match(ref["det_boxes"], ref["det_scores"], ref["det_classes"],
                                torch.from_numpy(out["boxes"]), torch.from_numpy(out["scores"]),
                                torch.from_numpy(out["labels"]), iou=0.99, score_tol=1e-3)


def test_rpn_prefix_is_the_only_rename():
    assert rename_detectron2_key("proposal_generator.rpn_head.conv.weight") == "rpn.head.conv.weight"
    assert rename_detectron2_key("roi_heads.res5.0.conv1.norm.weight") == "roi_heads.res5.0.conv1.norm.weight"
    assert rename_detectron2_key("pixel_mean") is None


def test_r101_weights_of_the_same_family_convert_and_run(tmp_path):
    """R101-C4 (530 keys) with another seed: the same converter, strict load, real proposals."""
    cfg = compose_config("train", ["model=r101_c4", *OVERRIDES])
    model = build_model(cfg.model, num_classes=80).eval()
    schema = [(k.replace("rpn.head.", "proposal_generator.rpn_head."), tuple(v.shape), "float32")
              for k, v in model.state_dict().items()]
    assert len(schema) == 530 and sum(int(np.prod(s)) for _, s, _ in schema) == 52_942_236
    path = tmp_path / "model_final_r101.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in detectron2_state(seed=5, schema=schema).items()}}, f)
    report = load_weights_into(model, read_weights(str(path)), source=str(path))
    assert not any(report[k] for k in ("missing", "unexpected", "shape_mismatch"))
    hwc = torch.load(os.path.join(FIXTURE, "ref_R50_C4_input.pt"), weights_only=True)["input_resized_uint8_bgr_hwc"]
    small = torch.as_tensor(hwc).permute(2, 0, 1)[:, ::2, ::2].contiguous()  # 400x534: keeps the test short
    with torch.no_grad():
        images = model.preprocess([{"image": small}])
        feats = model.backbone(images.tensor)
        boxes = model.rpn.inference(feats, images.image_sizes)
    assert feats.shape[-2:] == (25, 34) and 1.0 < float(feats.std()) < 10.0  # sane activations, like the R50 fixture
    wh = boxes[0][:, 2:] - boxes[0][:, :2]
    real = (wh > 1).all(dim=1).float().mean()
    assert len(boxes[0]) == 300 and float(real) > 0.9, f"only {float(real):.0%} of proposals are real boxes"
