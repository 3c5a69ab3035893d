"""detectres reproduces Detectron2's R50-FPN (faster_rcnn_R_50_FPN_3x) stage by stage, and its training
losses and gradients, from converted fixture weights (tests/fixtures/detectron2/fpn, made with Detectron2
itself; see its README): 1000 test proposals, score threshold 0.
"""
import os

import cv2
import pytest
import torch

from detectres import Detector
from detectres.config import compose_config
from detectres.modeling.build import build_model
from detectres.weights import load_weights_into, read_weights

from detectron2_weights import (FIXTURE, all_cores, detectron2_state, gradient_errors, reference_training_step,
                                write_model_zoo_pkl)
from test_detectron2_fixture import assert_detection_sets_match, match_proposals, rel_err
from test_detectron2_train import KEEP_ALL

FPN = os.path.join(FIXTURE, "fpn")
OVERRIDES = ["model.roi_heads.score_thresh=0.0"]
LEVELS = (2, 3, 4, 5, 6)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    state = detectron2_state(schema_file=os.path.join("fpn", "schema_R50_FPN.json"))
    return write_model_zoo_pkl(tmp_path_factory.mktemp("d2fpn") / "model_final_fpn_fixture.pkl", state)


def fpn_model(path: str, overrides=()):
    model = build_model(compose_config("train", ["model=r50_fpn", *OVERRIDES, *overrides]).model, num_classes=80)
    report = load_weights_into(model, read_weights(path), source=path)
    assert not any(report[k] for k in ("missing", "unexpected", "shape_mismatch"))  # all 295 keys, strictly
    return model


@pytest.fixture(scope="module")
def staged(converted):
    model = fpn_model(converted).eval()
    ref = torch.load(os.path.join(FPN, "ref_R50_FPN.pt"), weights_only=True)
    hwc = torch.load(os.path.join(FIXTURE, "ref_R50_C4_input.pt"), weights_only=True)["input_resized_uint8_bgr_hwc"]
    inputs = [{"image": torch.as_tensor(hwc).permute(2, 0, 1), "height": int(ref["orig_hw"][0]),
               "width": int(ref["orig_hw"][1])}]
    out = {}
    with torch.no_grad(), all_cores():
        images = model.preprocess(inputs)
        out["input_shape"] = tuple(images.tensor.shape)
        out["levels"] = feats = model.backbone(images.tensor)
        out["rpn"] = [model.rpn.head(f) for f in feats]
        boxes, logits = model.rpn.proposals_with_logits(feats, images.image_sizes)
        out["proposals"], out["proposal_logits"] = boxes[0], logits[0]
        out["match"] = match_proposals(ref["proposal_boxes"], boxes[0])
        out["pooled"] = model.roi_heads.pooler(feats[:4], boxes)
        out["box_features"] = model.roi_heads.box_features(feats, boxes, images.image_sizes)
        out["cls"], out["deltas"] = model.roi_heads.box_predictor(out["box_features"])
        out["detections"] = model.inference(inputs)[0]
    return out, ref


def close(value, reference, tol=1e-3):
    return abs(float(value) - float(reference)) <= tol * abs(float(reference))


def test_pyramid_levels_match(staged):
    out, ref = staged
    assert out["input_shape"] == tuple(ref["padded_input_shape"].tolist())  # padded to a multiple of 32
    for level, p in zip(LEVELS, out["levels"]):
        assert tuple(p.shape) == tuple(ref[f"p{level}_shape"].tolist()), level
        for stat, value in (("mean", p.mean()), ("std", p.std()), ("absmax", p.abs().max())):
            assert close(value, ref[f"p{level}_{stat}"]), (level, stat, float(value))
        assert rel_err(p[:, :, :8, :8], ref[f"p{level}_slice_8x8"]) < 1e-3, level


def test_rpn_outputs_per_level_match(staged):
    out, ref = staged
    (logits2, deltas2), *rest = out["rpn"]
    for name, x in (("logits", logits2), ("deltas", deltas2)):
        assert tuple(x.shape) == tuple(ref[f"rpn_{name}_p2_shape"].tolist())
        assert close(x.mean(), ref[f"rpn_{name}_p2_mean"]) and close(x.std(), ref[f"rpn_{name}_p2_std"])
        assert rel_err(x[:, :, :64, :64], ref[f"rpn_{name}_p2_slice_64x64"]) < 1e-3
    for level, (logits, deltas) in zip(LEVELS[1:], rest):
        assert rel_err(logits, ref[f"rpn_logits_p{level}"]) < 1e-3, level
        assert rel_err(deltas, ref[f"rpn_deltas_p{level}"]) < 1e-3, level


def test_proposals_match_one_to_one(staged):
    """Each of Detectron2's 1000 proposals has its own counterpart. Coordinates agree to 0.01 px except for
    a few very large boxes: an fp32 delta error of ~2e-5 moves a 700 px anchor's side by ~0.015 px, and
    Detectron2's own proposals are up to 0.011 px from the exact (float64) computation on these weights."""
    out, ref = staged
    assert out["proposals"].shape == ref["proposal_boxes"].shape == (1000, 4)
    nearest, idx = out["match"]
    assert len(set(idx.tolist())) == 1000  # one-to-one
    assert float((idx - torch.arange(1000)).abs().max()) <= 1  # at most neighbours swapped
    assert float((nearest > 0.01).float().mean()) <= 0.01 and float(nearest.max()) < 0.02
    assert rel_err(out["proposal_logits"][idx], ref["proposal_objectness_logits"]) < 1e-3


def test_pooled_features_and_box_head_match(staged):
    out, ref = staged
    assert close(out["pooled"].mean(), ref["pooled_mean"]) and close(out["pooled"].std(), ref["pooled_std"])
    feats = out["box_features"]
    assert close(feats.mean(), ref["box_head_features_mean"]) and close(feats.std(), ref["box_head_features_std"])
    idx = out["match"][1]  # our row for each reference proposal
    assert rel_err(out["cls"][idx], ref["box_cls_logits"]) < 1e-3
    assert rel_err(out["deltas"][idx], ref["box_deltas"]) < 1e-3


def test_detections_match_as_a_set(staged):
    out, ref = staged
    det = out["detections"]
    assert len(det["scores"]) == len(ref["det_scores"]) == 100
    assert_detection_sets_match(ref["det_boxes"], ref["det_scores"], ref["det_classes"], det["pred_boxes"],
                                det["scores"], det["pred_classes"], iou=0.999, score_tol=1e-4, coord_tol=0.01)


def test_full_pipeline_from_jpeg(converted):
    """As a user calls it: img.jpg through detectres' own resize and Detector.predict."""
    ref = torch.load(os.path.join(FPN, "ref_R50_FPN.pt"), weights_only=True)
    det = Detector.from_config("r50_fpn", weights=converted, overrides=OVERRIDES, device="cpu")
    assert det.class_names[0] == "person" and len(det.class_names) == 80
    with all_cores():
        out = det.predict(cv2.imread(os.path.join(FIXTURE, "img.jpg")))
    assert_detection_sets_match(ref["det_boxes"], ref["det_scores"], ref["det_classes"],
                                torch.from_numpy(out["boxes"]), torch.from_numpy(out["scores"]),
                                torch.from_numpy(out["labels"]), iou=0.99, score_tol=1e-3, coord_tol=0.01)


# -- training --------------------------------------------------------------------------------------------
def losses_and_gradients(path: str, mode: str):
    ref = torch.load(os.path.join(FPN, f"train_R50_FPN_{mode}.pt"), weights_only=True)
    model = fpn_model(path, KEEP_ALL if mode == "all" else [])
    return ref["losses"], reference_training_step(model, ref), gradient_errors(model, ref["grads"])


def test_training_keeping_every_labeled_sample_matches_detectron2(converted, all_cores):
    """No randomness: every labeled anchor and RoI; losses within 1e-4, every gradient within 2e-3."""
    ref, losses, errors = losses_and_gradients(converted, "all")
    for name, value in ref.items():
        assert abs(losses[name] - value) <= 1e-4 * abs(value), (name, losses[name], value)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 2e-3, f"{worst}: gradient differs by {errors[worst]:.2e} of its largest value"


def test_training_with_detectron2_sampling_matches(converted):
    """Detectron2's sampling after torch.manual_seed(7), reproduced draw for draw: the 256 RPN anchors exactly
    (RPN losses within 1e-4, RPN head gradients within 1e-4) and the two foreground RoIs (box loss within
    1e-4). The 510 background RoIs are drawn by position in the score-ordered proposals, and here 100+
    neighbouring proposals have logits within 2e-4 of each other while fp32 implementations differ by ~4e-5:
    swapping one such pair (as a different thread count does) moves loss_cls by up to 1.5e-3. So loss_cls is
    held to 3e-3 and the gradients the RoI head reaches to 2e-2."""
    ref, losses, errors = losses_and_gradients(converted, "seeded")
    for name in ("loss_rpn_cls", "loss_rpn_loc", "loss_box_reg"):
        assert abs(losses[name] - ref[name]) <= 1e-4 * abs(ref[name]), (name, losses[name], ref[name])
    assert abs(losses["loss_cls"] - ref["loss_cls"]) <= 3e-3 * ref["loss_cls"], (losses["loss_cls"], ref["loss_cls"])
    rpn = {k: v for k, v in errors.items() if "rpn_head" in k}
    assert max(rpn.values()) <= 1e-4, max(rpn.items(), key=lambda kv: kv[1])
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 2e-2, f"{worst}: gradient differs by {errors[worst]:.2e} of its largest value"
