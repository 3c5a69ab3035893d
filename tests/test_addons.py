"""The paper's add-ons on constructed inputs: voting, scale choice, maxout, context, TTA, ensembles."""
import numpy as np
import pytest
import torch

from detectres.config import compose_config
from detectres.modeling.build import build_model
from detectres.modeling.ensemble import EnsembleDetector
from detectres.modeling.postprocessing import box_voting, merge_detections
from detectres.modeling.tta import (
    BoxRefinement,
    ImageTTA,
    MultiScaleTesting,
    TestTimeDetector,
    choose_scale_pairs,
    flip_boxes,
)
from detectres.structures.boxes import scale_boxes


def quickstart(num_classes=3, overrides=()):
    cfg = compose_config("train", ["model=quickstart", *overrides])
    model = build_model(cfg.model, num_classes=num_classes).eval()
    model.roi_heads.score_thresh = 0.0
    return model, cfg


def test_box_voting_is_the_score_weighted_mean():
    kept = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    pool = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [0.0, 0.0, 10.0, 12.0],
                         [50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.6, 0.3, 0.8, 0.7])
    classes = torch.tensor([1, 1, 1, 1, 2])  # the far box and the other class do not vote
    voted = box_voting(kept, torch.tensor([1]), pool, scores, classes, iou_thresh=0.5)
    expected = (0.9 * pool[0] + 0.6 * pool[1] + 0.3 * pool[2]) / (0.9 + 0.6 + 0.3)
    assert torch.allclose(voted[0], expected)
    # below the IoU threshold a box does not vote
    voted = box_voting(kept, torch.tensor([1]), pool, scores, classes, iou_thresh=0.8)
    assert torch.allclose(voted[0], (0.9 * pool[0] + 0.3 * pool[2]) / 1.2)  # IoU(kept, pool[1]) = 0.68


def test_merge_detections_nms_then_vote():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 11.0], [30.0, 30.0, 40.0, 40.0]])
    scores = torch.tensor([0.9, 0.5, 0.04])
    out = merge_detections(boxes, scores, torch.tensor([0, 0, 0]), score_thresh=0.05, nms_thresh=0.3,
                           vote_thresh=0.5, max_detections=10)
    assert out["scores"].tolist() == [pytest.approx(0.9)] and out["pred_classes"].tolist() == [0]
    assert torch.allclose(out["pred_boxes"][0], torch.tensor([0.0, 0.0, 10.0, (0.9 * 10 + 0.5 * 11) / 1.4]))


def test_scale_chooser_picks_the_bracketing_adjacent_pair():
    factors = torch.tensor([200.0, 400.0, 600.0, 800.0, 1000.0]) / 600.0  # a 600-px-short-side image
    areas = torch.tensor([
        100.0 ** 2,   # scaled: 33, 67, 100, 133, 167 px -> all below 224: last pair (3, 4)
        300.0 ** 2,   # 100, 200, 300, ...: 224 lies between 400 and 600 -> (1, 2)
        190.0 ** 2,   # 63, 127, 190, 253, 317: 224 lies between 600 and 800 -> (2, 3)
        2000.0 ** 2,  # above 224 everywhere: first pair (0, 1)
        500.0 ** 2,   # 167, 333: between 200 and 400 -> (0, 1)
    ])
    assert choose_scale_pairs(areas, factors, 224).tolist() == [[3, 4], [1, 2], [2, 3], [0, 1], [0, 1]]


def test_multiscale_merges_by_elementwise_max(monkeypatch):
    model, _ = quickstart()
    tt = TestTimeDetector(model=model, min_size=128, max_size=400,
                          multiscale=MultiScaleTesting(scales=[96, 128, 192], proposal_scale=128, canonical_size=128))
    image = torch.randint(0, 256, (3, 120, 160), dtype=torch.uint8)
    levels = [tt.features_at(image, s) for s in (96, 128, 192)]
    boxes = torch.tensor([[10.0, 10.0, 40.0, 40.0], [5.0, 5.0, 150.0, 110.0], [60.0, 20.0, 100.0, 90.0]])
    captured = {}

    class Capture(torch.nn.Module):
        def forward(self, x):
            captured["x"] = x
            return x, x

    monkeypatch.setattr(model.roi_heads, "box_predictor", Capture())
    tt.score_boxes(levels, boxes)
    factors = torch.tensor([lv.factor[1] for lv in levels])
    pairs = choose_scale_pairs((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), factors, 128)
    heads = model.roi_heads
    for r in range(len(boxes)):
        per_scale = [heads.box_features(levels[k].features, [scale_boxes(boxes[r:r + 1], levels[k].factor)],
                                        [levels[k].image_hw]) for k in pairs[r].tolist()]
        assert torch.allclose(captured["x"][r], torch.maximum(*per_scale)[0], atol=1e-5)


@pytest.mark.parametrize("mode", ["shared", "separate"])
def test_context_widens_the_predictor_and_trains_the_global_branch(mode):
    plain, _ = quickstart()
    model, _ = quickstart(overrides=[f"model.roi_heads.context={mode}"])
    d = plain.roi_heads.box_predictor.cls_score.in_features
    assert model.roi_heads.box_predictor.cls_score.in_features == 2 * d
    model.train()
    item = {"image": torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8),
            "gt_boxes": torch.tensor([[10.0, 10.0, 60.0, 60.0]]), "gt_classes": torch.tensor([1])}
    seen = {}

    def keep_output(module, args, output):
        output.retain_grad()
        seen["global"] = output

    model.roi_heads.context.register_forward_hook(keep_output)
    sum(model([item]).values()).backward()
    assert seen["global"].shape == (1, d) and seen["global"].grad is not None
    assert seen["global"].grad.abs().sum() > 0  # the loss reaches the global feature
    w = model.roi_heads.box_predictor.cls_score.weight.grad
    assert w[:, d:].abs().sum() > 0  # the global half of the predictor learns
    branch = model.roi_heads.context.res5 if mode == "separate" else model.roi_heads.res5
    grads = [p.grad for p in branch.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    if mode == "separate":
        assert model.roi_heads.context.res5 is not model.roi_heads.res5


def test_tta_maps_flipped_boxes_back_exactly():
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0], [0.0, 0.0, 160.0, 120.0]])
    assert flip_boxes(boxes, 160).tolist() == [[130.0, 5.0, 150.0, 25.0], [0.0, 0.0, 160.0, 120.0]]
    assert torch.equal(flip_boxes(flip_boxes(boxes, 160), 160), boxes)
    model, _ = quickstart()
    tt = TestTimeDetector(model=model, min_size=128, max_size=400)
    image = torch.randint(0, 256, (3, 120, 160), dtype=torch.uint8)
    flipped_pass = tt.detect_once(image, 128, flip=True)
    direct = tt.detect_once(image.flip(-1), 128, flip=False)
    assert len(direct["scores"]) > 0
    assert torch.equal(flipped_pass["pred_boxes"], flip_boxes(direct["pred_boxes"], 160))
    assert torch.equal(flipped_pass["scores"], direct["scores"])


def test_baseline_wrapper_equals_the_plain_model():
    model, cfg = quickstart()
    image = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    tt = TestTimeDetector(model=model, min_size=cfg.input.min_size_test, max_size=cfg.input.max_size_test)
    ours = tt.inference([{"image": torch.from_numpy(image.transpose(2, 0, 1).copy()), "height": 150, "width": 200}])[0]
    from detectres.utils.resize import resize_image, shortest_edge_size

    hw = shortest_edge_size(150, 200, cfg.input.min_size_test, cfg.input.max_size_test)
    resized = torch.from_numpy(resize_image(image, hw).transpose(2, 0, 1).copy())
    plain = model.inference([{"image": resized, "height": 150, "width": 200}])[0]
    assert torch.allclose(ours["pred_boxes"], plain["pred_boxes"], atol=1e-3)
    assert torch.allclose(ours["scores"], plain["scores"], atol=1e-6)


def test_refinement_and_tta_run_and_respect_limits():
    model, _ = quickstart()
    model.roi_heads.detections_per_image = 20
    image = torch.randint(0, 256, (3, 120, 160), dtype=torch.uint8)
    for kwargs in ({"refine": BoxRefinement()},
                   {"tta": ImageTTA(sizes=[96, 128], flip=True, merge="vote")},
                   {"refine": BoxRefinement(),
                    "multiscale": MultiScaleTesting(scales=[96, 128, 160], proposal_scale=128, canonical_size=None)}):
        out = TestTimeDetector(model=model, min_size=128, max_size=400, **kwargs).detect(image)
        assert 0 < len(out["scores"]) <= 20
        b = out["pred_boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 160).all() and (b[:, 3] <= 120).all()


def test_ensemble_of_one_model_equals_the_model():
    model, _ = quickstart()
    item = {"image": torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8), "height": 96, "width": 128}
    single = model.inference([item])[0]
    ensembled = EnsembleDetector([model]).inference([item])[0]
    assert torch.allclose(ensembled["pred_boxes"], single["pred_boxes"], atol=1e-4)
    assert torch.allclose(ensembled["scores"], single["scores"], atol=1e-5)
    assert torch.equal(ensembled["pred_classes"], single["pred_classes"])
    two = EnsembleDetector([model, quickstart()[0]]).inference([item])[0]
    assert len(two["scores"]) > 0


def test_addon_classes_check_their_values():
    with pytest.raises(ValueError, match="proposal_scale 700 must be one of"):
        MultiScaleTesting(scales=[600, 800], proposal_scale=700)
    with pytest.raises(ValueError, match="at least two scales"):
        MultiScaleTesting(scales=[600], proposal_scale=600)
    with pytest.raises(ValueError, match="tta.merge"):
        ImageTTA(merge="mean")
    assert MultiScaleTesting(scales=[800, 200, 600]).scales == (200, 600, 800)


def test_multiscale_canonical_size_defaults_to_the_pooled_extent():
    model, _ = quickstart()
    assert model.roi_heads.roi_extent == 8 * 16  # the quickstart pools 8x8 at stride 16
    image = torch.randint(0, 256, (3, 120, 160), dtype=torch.uint8)
    def wrapper(canonical_size):
        return TestTimeDetector(model=model, min_size=128, max_size=400, multiscale=MultiScaleTesting(
            scales=[64, 128, 192], proposal_scale=128, canonical_size=canonical_size))

    auto, fixed = wrapper(None), wrapper(128)
    a, b = auto.detect(image), fixed.detect(image)
    assert len(a["scores"]) > 0 and torch.equal(a["pred_boxes"], b["pred_boxes"])
