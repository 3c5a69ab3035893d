"""The FPN variant: pyramid, multi-level anchors and proposals, level assignment, weights, and every user path
(training, evaluation, the Python API, test-time procedures, export) on the quickstart-sized FPN."""
import pickle
import shutil

import numpy as np
import pytest
import torch
import torchvision

from detectres.config import compose_config
from detectres.modeling.anchors import AnchorGenerator
from detectres.modeling.backbones.fpn import FPN
from detectres.modeling.backbones.resnet import ResNet
from detectres.modeling.build import build_model
from detectres.modeling.poolers import MultiLevelRoIPooler, RoIPooler, assign_pyramid_levels
from detectres.weights import load_model_weights, read_weights

from test_weights import caffe2_blobs_from

TINY = dict(stem_channels=8, widths=[16, 32, 64, 128], num_blocks=[1, 1, 1, 1], freeze_at=0)


@pytest.mark.parametrize("depth,form", [(18, {}), (50, {"stride_in_1x1": False}), (50, {"preact": True})])
def test_pyramid_on_every_resnet_form(depth, form):
    fpn = FPN(bottom_up=ResNet(depth=depth, **TINY, **form), out_channels=32).eval()
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        levels = fpn(x)
        res = fpn.bottom_up.forward_stages(x, ["res2", "res3", "res4", "res5"])
    assert fpn.strides == [4, 8, 16, 32, 64] and fpn.level_names == ["p2", "p3", "p4", "p5", "p6"]
    assert [tuple(p.shape[-2:]) for p in levels] == [(24, 40), (12, 20), (6, 10), (3, 5), (2, 3)]
    assert all(p.shape[1] == 32 for p in levels)
    # P5 = output(lateral(res5)); P4 adds P5's lateral upsampled; P6 = P5 subsampled by 2
    with torch.no_grad():
        top = fpn.fpn_lateral5(res[3])
        assert torch.allclose(levels[3], fpn.fpn_output5(top), atol=1e-5)
        p4 = fpn.fpn_output4(fpn.fpn_lateral4(res[2]) + top.repeat_interleave(2, 2).repeat_interleave(2, 3))
        assert torch.allclose(levels[2], p4, atol=1e-5)
    assert torch.equal(levels[4], levels[3][:, :, ::2, ::2])


def test_fpn_needs_padding_to_its_coarsest_stride():
    cfg = compose_config("train", ["model=quickstart_fpn", "model.size_divisibility=0"])
    with pytest.raises(Exception, match=r"size_divisibility=0: the backbone \(FPN\) needs inputs padded to a multiple of 32"):
        build_model(cfg.model, num_classes=3)


def test_one_anchor_size_per_level():
    gen = AnchorGenerator(sizes=[[32], [64], [128], [256], [512]], aspect_ratios=[0.5, 1.0, 2.0],
                          strides=[4, 8, 16, 32, 64])
    anchors = gen([(8, 10), (4, 5), (2, 3), (1, 2), (1, 1)])
    assert [len(a) for a in anchors] == [8 * 10 * 3, 4 * 5 * 3, 2 * 3 * 3, 1 * 2 * 3, 3]
    sides = [float(((a[1, 2] - a[1, 0]))) for a in anchors]  # the ratio-1 anchor of the first cell
    assert sides == [32.0, 64.0, 128.0, 256.0, 512.0]
    centre = (anchors[1][3 * 7, :2] + anchors[1][3 * 7, 2:]) / 2  # level 3, cell (y=1, x=2): 8 px apart
    assert centre.tolist() == [16.0, 8.0]
    with pytest.raises(ValueError, match="give one list per level"):
        AnchorGenerator(sizes=[32, 64], aspect_ratios=[1.0], strides=[4, 8])
    with pytest.raises(ValueError, match="same number of sizes"):
        AnchorGenerator(sizes=[[32], [64, 128]], aspect_ratios=[1.0], strides=[4, 8])


def test_boxes_go_to_the_level_that_suits_their_size():
    sides = torch.tensor([8.0, 111.0, 112.0, 223.0, 224.0, 448.0, 2000.0])
    boxes = torch.stack([torch.zeros(7), torch.zeros(7), sides, sides], dim=1)
    levels = assign_pyramid_levels(boxes, min_level=2, max_level=5, canonical_box_size=224, canonical_level=4)
    assert levels.tolist() == [0, 0, 1, 1, 2, 3, 3]  # P2, P2, P3, P3, P4, P5, P5


def test_multi_level_pooling_equals_pooling_each_box_from_its_level():
    feats = [torch.randn(2, 4, 64 // s, 64 // s) for s in (4, 8, 16, 32)]
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [5.0, 5.0, 60.0, 50.0]]), torch.tensor([[1.0, 2.0, 63.0, 63.0]])]
    pooler = MultiLevelRoIPooler(strides=[4, 8, 16, 32], output_size=3, sampling_ratio=2, canonical_box_size=32)
    out = pooler(feats, boxes)
    levels = assign_pyramid_levels(torch.cat(boxes), min_level=2, max_level=5, canonical_box_size=32, canonical_level=4)
    rows = [(0, boxes[0][0]), (0, boxes[0][1]), (1, boxes[1][0])]
    for r, (image, box) in enumerate(rows):
        level = int(levels[r])
        single = RoIPooler(output_size=3, spatial_scale=1 / (4 * 2 ** level), sampling_ratio=2)
        assert torch.allclose(out[r], single(feats[level][image:image + 1], [box[None]])[0], atol=1e-6)
    assert len(set(levels.tolist())) > 1


def test_proposals_are_taken_per_level_and_nms_runs_per_level():
    """Two identical boxes from different levels both survive NMS; each level contributes its own top-k."""
    cfg = compose_config("train", ["model=quickstart_fpn", "model.rpn.pre_nms_topk_test=2",
                                   "model.rpn.post_nms_topk_test=10"])
    rpn = build_model(cfg.model, num_classes=3).rpn
    anchors = [torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)] * 2
    logits = [torch.tensor([[5.0, 4.0, 3.0]]), torch.tensor([[1.0, 0.5, 0.2]])]
    boxes, scores = rpn.select_proposals(anchors, logits, [torch.zeros(1, 3, 4)] * 2, [(20, 20)], rpn.topk_test)
    assert scores[0].tolist() == [5.0, 1.0]  # the best of each level (NMS removed 4.0 within level 0)


@pytest.fixture(scope="module")
def fpn_trained(tiny_trained_fpn):
    return tiny_trained_fpn


def test_fpn_trains_evaluates_and_predicts(fpn_trained, tiny_shapes):
    import json
    import os

    from detectres import Detector

    metrics = json.load(open(os.path.join(fpn_trained, "eval.json")))
    assert np.isfinite(metrics["AP"]) and set(metrics["per_class"]) == {"circle", "rectangle", "triangle"}
    det = Detector.from_checkpoint(os.path.join(fpn_trained, "model_final.pth"), device="cpu")
    assert type(det.model.backbone).__name__ == "FPN"
    image = (np.random.default_rng(0).random((150, 170, 3)) * 255).astype(np.uint8)
    out = det.predict(image)
    assert out["boxes"].shape[1] == 4 and len(out["scores"]) == len(out["labels"])
    assert (out["boxes"][:, 2] <= 170).all() and (out["boxes"][:, 3] <= 150).all()


@pytest.mark.parametrize("test", ["refine", "tta"])
def test_refinement_and_image_tta_run_on_fpn(fpn_trained, shapes_overrides, test):
    import os

    from detectres.apps.evaluate import evaluate

    results = evaluate(compose_config("eval", [*shapes_overrides, f"checkpoint={os.path.join(fpn_trained, 'model_final.pth')}",
                                               f"test={test}", f"runtime.output_dir={fpn_trained}/eval_{test}"]))
    assert np.isfinite(results["AP"]) and results["skipped_images"] == 0


def test_c4_only_addons_say_so_with_fpn(fpn_trained, shapes_overrides):
    import os

    from detectres.apps.evaluate import evaluate

    ckpt = os.path.join(fpn_trained, "model_final.pth")
    with pytest.raises(ValueError, match="multi-scale testing .* is the paper's C4 procedure.*use test=tta"):
        evaluate(compose_config("eval", [*shapes_overrides, f"checkpoint={ckpt}", "test=multiscale"]))
    cfg = compose_config("train", ["model=quickstart_fpn", "model.roi_heads.context=shared"])
    with pytest.raises(Exception, match="global context is a C4 construct"):
        build_model(cfg.model, num_classes=3)


def test_an_ensemble_of_fpn_models(fpn_trained):
    import os

    from detectres import Detector
    from detectres.modeling.ensemble import EnsembleDetector

    ckpt = os.path.join(fpn_trained, "model_final.pth")
    model = Detector.from_checkpoint(ckpt, device="cpu").model.eval()
    image = torch.from_numpy((np.random.default_rng(1).random((3, 128, 160)) * 255).astype(np.uint8))
    eager = model.inference([{"image": image}])[0]
    both = EnsembleDetector([model, model]).inference([{"image": image}])[0]
    assert torch.allclose(both["scores"], eager["scores"], atol=1e-5)  # two copies of one model: the same


def test_imagenet_backbones_start_an_fpn_model(tmp_path):
    """torchvision (r50_fpn_tv form) and MSRA (r50_fpn form) ResNet weights fill backbone.bottom_up; the
    pyramid, RPN and box head keep their initialisation."""
    tv = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18-tiny.pth"
    torch.save(tv.state_dict(), path)
    cfg = compose_config("train", ["model=r50_fpn_tv", "model.backbone.bottom_up.depth=18",
                                   "model.backbone.bottom_up.freeze_at=0", "model.backbone.out_channels=16"])
    model = build_model(cfg.model, num_classes=3).eval()
    report = load_model_weights(model, str(path))
    assert report["missing"] == [] and {k.split(".")[0] + "." + k.split(".")[1] for k in report["initialised"]} >= {
        "backbone.fpn_lateral2", "roi_heads.box_head", "rpn.head"}
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        assert torch.allclose(model.backbone.bottom_up(x), ref, atol=1e-4)

    src = ResNet(depth=50, **TINY).eval()
    msra = tmp_path / "R-tiny.pkl"
    with open(msra, "wb") as f:
        pickle.dump(caffe2_blobs_from(src), f, protocol=2)
    cfg = compose_config("train", ["model=r50_fpn", "model.backbone.out_channels=16",
                                   *[f"model.backbone.bottom_up.{k}={v}" for k, v in TINY.items()]])
    model = build_model(cfg.model, num_classes=3).eval()
    assert load_model_weights(model, str(msra))["missing"] == []
    with torch.no_grad():
        assert torch.allclose(model.backbone.bottom_up(x), src(x), atol=1e-4)


def test_convert_weights_tool_on_a_detectron2_fpn_checkpoint(tmp_path):
    import subprocess
    import sys

    from detectres.config import PROJECT_ROOT

    src = build_model(compose_config("train", ["model=r50_fpn"]).model, num_classes=80)
    state = {k.replace("rpn.head.", "proposal_generator.rpn_head."): v.numpy() for k, v in src.state_dict().items()}
    path = tmp_path / "model_final_fpn.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": state}, f)
    dst = tmp_path / "r50_fpn_detectres.pth"
    res = subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / "convert_weights.py"), str(path), str(dst),
                          "--format", "detectron2"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "model=r50_fpn" in res.stdout
    weights = read_weights(str(dst))
    assert weights.config["model"]["backbone"]["_target_"].endswith("fpn.FPN")
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_video_demo_runs_an_fpn_checkpoint(fpn_trained, tmp_path):
    import os
    import subprocess
    import sys

    import cv2

    from detectres.config import PROJECT_ROOT

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((96, 128, 3), 60 * i, np.uint8))
    res = subprocess.run([sys.executable, str(PROJECT_ROOT / "demo" / "demo.py"),
                          f"checkpoint={os.path.join(fpn_trained, 'model_final.pth')}", f"source={folder}",
                          f"output={tmp_path / 'out'}", "display=false"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "processed 3 frames" in res.stdout and len(os.listdir(tmp_path / "out")) == 3
