import numpy as np
import pytest
import torch

from detectres import Detector
from detectres.config import compose_config
from detectres.modeling.build import build_model


def tiny_model(num_classes=3, overrides=()):
    cfg = compose_config("train", ["model=quickstart", *overrides])
    return build_model(cfg.model, num_classes=num_classes), cfg


def make_item(h=128, w=160, boxes=((20.0, 30.0, 70.0, 90.0),), classes=(1,)):
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    for (x1, y1, x2, y2) in boxes:
        image[:, int(y1):int(y2), int(x1):int(x2)] = 255
    return {"image": image, "gt_boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "gt_classes": torch.tensor(classes, dtype=torch.long)}


def test_losses_are_finite_without_objects():
    model, _ = tiny_model()
    model.train()
    item = make_item(boxes=(), classes=())
    losses = model([item])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    for name, value in losses.items():
        assert torch.isfinite(value), name
    assert losses["loss_rpn_cls"] > 0 and losses["loss_cls"] > 0
    assert losses["loss_rpn_loc"] == 0 and losses["loss_box_reg"] == 0
    sum(losses.values()).backward()


def test_r50_c4_layout_and_losses():
    cfg = compose_config("train", ["model=r50_c4"])
    model = build_model(cfg.model, num_classes=80)
    sd = model.state_dict()
    assert len(sd) == 275 and sum(v.numel() for v in sd.values()) == 33_897_884
    assert sd["roi_heads.box_predictor.cls_score.weight"].shape == (81, 2048)
    assert sd["roi_heads.box_predictor.bbox_pred.weight"].shape == (320, 2048)
    assert sd["rpn.head.objectness_logits.weight"].shape == (15, 1024, 1, 1)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 33_569_244  # stem + res2 frozen, as Detectron2's FREEZE_AT=2


def test_overfits_one_batch():
    torch.manual_seed(0)
    model, _ = tiny_model()
    model.train()
    batch = [make_item(), make_item(boxes=((10.0, 10.0, 60.0, 50.0), (80.0, 60.0, 140.0, 120.0)), classes=(0, 2))]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
    first = None
    for _ in range(60):
        total = sum(model(batch).values())
        first = first if first is not None else total.item()
        opt.zero_grad()
        total.backward()
        opt.step()
    final = sum(model(batch).values()).item()
    assert final < first / 2, f"loss {first:.3f} -> {final:.3f}"


def test_inference_output_and_mapping_to_original_size():
    model, _ = tiny_model()
    model.eval()
    model.roi_heads.score_thresh = 0.0
    item = make_item(h=96, w=128)
    item["height"], item["width"] = 192, 256  # the original was twice as large
    out = model.inference([item])[0]
    assert set(out) == {"pred_boxes", "scores", "pred_classes"}
    assert out["pred_boxes"].shape[1] == 4 and len(out["scores"]) == len(out["pred_classes"]) > 0
    boxes = out["pred_boxes"]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 256).all() and (boxes[:, 3] <= 192).all()
    assert (boxes[:, 2] > boxes[:, 0]).all()
    assert out["pred_classes"].max() < 3


def test_predict_api_maps_boxes_to_original_pixels(tmp_path):
    model, cfg = tiny_model()
    det = Detector(model, class_names=["a", "b", "c"], min_size=96, max_size=400)
    image = np.zeros((240, 320, 3), np.uint8)  # resized to 96x128 inside predict
    captured = {}

    def fake_inference(inputs):
        captured["hw"] = tuple(inputs[0]["image"].shape[1:])
        # a detection covering the middle of the *resized* image
        from detectres.modeling.postprocessing import detector_postprocess

        r = {"pred_boxes": torch.tensor([[32.0, 24.0, 96.0, 72.0]]), "scores": torch.tensor([0.9]),
             "pred_classes": torch.tensor([2])}
        return [detector_postprocess(r, inputs[0], captured["hw"])]

    det.model.inference = fake_inference
    out = det.predict(image)
    assert captured["hw"] == (96, 128)
    assert set(out) == {"boxes", "scores", "labels", "class_names"}
    assert out["boxes"].dtype == np.float32 and out["boxes"].shape == (1, 4)
    np.testing.assert_allclose(out["boxes"][0], [80.0, 60.0, 240.0, 180.0], rtol=1e-5)
    assert out["labels"].tolist() == [2] and out["class_names"] == ["c"]
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        det.predict(np.zeros((10, 10), np.uint8))


def test_detector_from_config_real_forward():
    det = Detector.from_config("quickstart", class_names=["a", "b", "c"], device="cpu",
                               overrides=["model.roi_heads.score_thresh=0.0"])
    out = det.predict(np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8))
    assert len(out["boxes"]) > 0 and out["boxes"].shape[1:] == (4,)
    assert len(out["class_names"]) == len(out["scores"]) == len(out["labels"])
    assert out["boxes"][:, 2].max() <= 200 and out["boxes"][:, 3].max() <= 150
    with pytest.raises(Exception, match="score_threshold"):
        Detector.from_config("quickstart", class_names=["a"], overrides=["model.roi_heads.score_threshold=0.1"])


def test_training_and_inference_return_one_type_each_in_any_mode():
    """forward is the training computation (losses) and inference gives detections, whatever the mode."""
    model, _ = tiny_model()
    item = make_item()
    for mode in (True, False):
        model.train(mode)
        losses = model([item])
        assert isinstance(losses, dict) and set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
        detections = model.inference([item])
        assert isinstance(detections, list) and set(detections[0]) == {"pred_boxes", "scores", "pred_classes"}
    with pytest.raises(ValueError, match=r"needs gt_boxes and gt_classes; inputs \[0\] have none .*inference"):
        model([{"image": item["image"]}])


def test_a_batch_gives_each_image_its_own_detections():
    """Batched post-processing (one NMS keyed by image) equals running the images one by one."""
    torch.manual_seed(0)
    det = Detector.from_config("quickstart", class_names=["a", "b", "c"], device="cpu",
                               overrides=["model.roi_heads.score_thresh=0.0"])
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (150, 200, 3), dtype=np.uint8) for _ in range(3)]
    images[1][40:110, 50:160] = 255
    batch = det.predict(images)
    assert isinstance(batch, list) and len(batch) == 3
    for image, got in zip(images, batch):
        alone = det.predict(image)
        assert len(got["scores"]) == len(alone["scores"]) > 0
        np.testing.assert_allclose(got["scores"], alone["scores"], atol=1e-5)
        # the same detection in each slot, up to the order of equal scores (which CPUs break differently)
        close = (np.abs(got["scores"][:, None] - alone["scores"][None]) <= 1e-5) & \
                (got["labels"][:, None] == alone["labels"][None]) & \
                (np.abs(got["boxes"][:, None] - alone["boxes"][None]).max(-1) <= 1e-3)
        assert close.any(1).all() and close.any(0).all()
        assert got["labels"].tolist() == alone["labels"].tolist()
    assert not np.array_equal(batch[0]["scores"], batch[1]["scores"])
