import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision

from detectres.config import PROJECT_ROOT, compose_config
from detectres.modeling.build import build_model
from detectres.weights import load_model_weights, read_weights
from detectres.weights.loading import WeightsMismatchError
from detectres.weights.msra import FROZEN_BN_EPS
from detectres.weights.safe_pickle import UnsafePickleError, safe_load_pickle
from detectres.weights.torchvision import IMAGENET_RGB_MEAN, IMAGENET_RGB_STD


class Payload:
    """Unpickling this would create a file: the classic code-execution pickle."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "model_final_evil.pkl"
    with open(evil, "wb") as f:
        pickle.dump({"model": {"backbone.stem.conv1.weight": Payload(str(marker))}}, f)
    with pytest.raises(UnsafePickleError, match=r"model_final_evil.pkl.*import (builtins|io)\.open"):
        safe_load_pickle(str(evil))
    with pytest.raises(UnsafePickleError):
        read_weights(str(evil))
    res = subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / "convert_weights.py"), str(evil),
                          str(tmp_path / "out.pth"), "--format", "detectron2"], capture_output=True, text=True)
    assert res.returncode == 1 and "refusing to load" in res.stderr
    assert not marker.exists() and not (tmp_path / "out.pth").exists()


def test_pth_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": Payload(str(marker))}}, path)
    with pytest.raises(ValueError, match="evil.pth"):
        read_weights(str(path))
    assert not marker.exists()


def tv_r18_model():
    cfg = compose_config("train", ["model=r18_c4", "model.input_format=RGB", f"model.pixel_mean={IMAGENET_RGB_MEAN}",
                                   f"model.pixel_std={IMAGENET_RGB_STD}", "model.backbone.freeze_at=0"])
    return build_model(cfg.model, num_classes=3).eval()


def test_torchvision_format(tmp_path):
    tv = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18-tiny.pth"
    torch.save(tv.state_dict(), path)
    weights = read_weights(str(path))
    assert weights.format == "torchvision" and weights.meta["input_format"] == "RGB"
    model = tv_r18_model()
    report = load_model_weights(model, str(path))
    assert report["missing"] == [] and any(k.startswith("rpn.") for k in report["initialised"])
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x)))))))
        assert torch.allclose(model.backbone(x), ref, atol=1e-4)
    # ImageNet RGB weights into a BGR / caffe-mean model: refused, naming what differs
    bgr = build_model(compose_config("train", ["model=r18_c4"]).model, num_classes=3)
    with pytest.raises(WeightsMismatchError, match="input_format: weights expect RGB"):
        load_model_weights(bgr, str(path))


def caffe2_blobs_from(backbone) -> dict:
    """Caffe2 (MSRA) names and numpy arrays for a detectres bottleneck ResNet with FrozenBN."""
    branch = {"shortcut": "branch1", "conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c"}
    blobs = {"fc1000_w": np.zeros((10, 4), np.float32), "fc1000_b": np.zeros(10, np.float32)}
    for key, value in backbone.state_dict().items():
        parts = key.split(".")
        if parts[0] == "stem":
            base = "conv1" if parts[2] == "weight" else "res_conv1_bn"
        else:
            base = f"{parts[0]}_{parts[1]}_{branch[parts[2]]}" + ("" if parts[3] == "weight" else "_bn")
        suffix = {"weight": "_w", "norm.weight": "_s", "norm.bias": "_b"}.get(".".join(parts[-2:]) if parts[-2] == "norm" else parts[-1])
        if suffix is None:
            continue  # running statistics: Caffe2 affine channels have none
        blobs[base + suffix] = value.numpy().copy()
    return blobs


def test_msra_format_is_an_affine_channel(tmp_path):
    from detectres.modeling.backbones.resnet import ResNet

    src = ResNet(depth=50, stem_channels=8, widths=[16, 32, 64, 128], num_blocks=[1, 2, 1, 1], freeze_at=0).eval()
    for m in src.modules():
        if hasattr(m, "running_var") and m.running_var.dim() == 1:
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_()
            m.running_mean.zero_()
            m.running_var.fill_(1.0 - FROZEN_BN_EPS)  # y = x * s + b exactly
    path = tmp_path / "R-tiny.pkl"
    with open(path, "wb") as f:
        pickle.dump(caffe2_blobs_from(src), f, protocol=2)
    weights = read_weights(str(path))
    assert weights.format == "msra" and weights.meta["input_format"] == "BGR" and weights.meta["stride_in_1x1"]
    assert "backbone.stem.conv1.norm.running_var" in weights.state_dict
    assert "roi_heads.res5.0.conv1.weight" in weights.state_dict  # res5 goes to the C4 box head
    assert not any("fc1000" in k for k in weights.state_dict)
    dst = ResNet(depth=50, stem_channels=8, widths=[16, 32, 64, 128], num_blocks=[1, 2, 1, 1], freeze_at=0).eval()
    backbone_sd = {k.split(".", 1)[1]: v for k, v in weights.state_dict.items()}
    dst.load_state_dict(backbone_sd, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(dst(x), src(x), atol=1e-5)


def detectron2_named(model) -> dict:
    return {k.replace("rpn.head.", "proposal_generator.rpn_head."): v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_detectron2_format_and_strict_loading(tmp_path, suffix):
    cfg = compose_config("train", ["model=quickstart", "model.pixel_mean=[103.53,116.28,123.675]",
                                   "model.pixel_std=[1.0,1.0,1.0]"])
    src = build_model(cfg.model, num_classes=80)
    state = detectron2_named(src)
    path = tmp_path / f"model_final_tiny{suffix}"
    if suffix == ".pth":
        torch.save({"model": state, "iteration": 10}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "test"}, f)
    weights = read_weights(str(path))
    assert weights.format == "detectron2" and weights.class_names[0] == "person"
    dst = build_model(cfg.model, num_classes=80)
    load_model_weights(dst, str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    # a new class count: strict refuses and names both counts, strict=False starts the class layers afresh
    small = build_model(cfg.model, num_classes=3)
    with pytest.raises(WeightsMismatchError, match="was trained for 80 classes and this run has 3 classes: to fine-tune on "
                                                   "these classes pass strict_weights=false, which starts "
                                                   "roi_heads.box_predictor.bbox_pred, roi_heads.box_predictor.cls_score"):
        load_model_weights(small, str(path))
    report = load_model_weights(small, str(path), strict=False)
    assert report["shape_mismatch"] == [] and report["missing"] == []
    assert torch.equal(small.state_dict()["rpn.head.conv.weight"], src.state_dict()["rpn.head.conv.weight"])


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        read_weights(str(tmp_path / "nope.pkl"))
    junk = tmp_path / "junk.pth"
    torch.save({"foo.bar": torch.zeros(1)}, junk)
    with pytest.raises(ValueError, match="cannot tell the weight format"):
        read_weights(str(junk))


def test_convert_weights_tool_writes_a_runnable_checkpoint(tmp_path):
    cfg = compose_config("train", ["model=r50_c4"])
    src = build_model(cfg.model, num_classes=80)
    path = tmp_path / "model_final_r50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in detectron2_named(src).items()}}, f)
    dst = tmp_path / "r50_c4_detectres.pth"
    res = subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / "convert_weights.py"), str(path), str(dst),
                          "--format", "detectron2"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "model=r50_c4" in res.stdout and "input BGR" in res.stdout
    w = read_weights(str(dst))
    assert w.class_names[-1] == "toothbrush" and w.config["model"]["backbone"]["depth"] == 50
    assert w.config["data"]["val"]["ann_file"].endswith("instances_val2017.json")
    from detectres import Detector

    det = Detector.from_checkpoint(str(dst), device="cpu")
    assert torch.equal(det.model.state_dict()["rpn.head.conv.weight"], src.state_dict()["rpn.head.conv.weight"])


def test_imagenet_res5_fills_both_branches_of_a_separate_context_head(tmp_path):
    """The global-context branch has res5 weights of its own; ImageNet weights must start it too."""
    from detectres.modeling.backbones.resnet import ResNet

    arch = {"stem_channels": 8, "widths": [16, 32, 64, 128], "num_blocks": [1, 2, 1, 1]}
    src = ResNet(depth=50, freeze_at=0, **arch).eval()
    for m in src.modules():
        if hasattr(m, "running_var") and m.running_var.dim() == 1:
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_()
            m.running_mean.zero_()
            m.running_var.fill_(1.0 - FROZEN_BN_EPS)
    path = tmp_path / "R-tiny.pkl"
    with open(path, "wb") as f:
        pickle.dump(caffe2_blobs_from(src), f, protocol=2)
    cfg = compose_config("train", ["model=r50_c4", "model.roi_heads.context=separate",
                                   *[f"model.backbone.{k}={v}" for k, v in arch.items()]])
    model = build_model(cfg.model, num_classes=3)
    report = load_model_weights(model, str(path))  # strict: nothing of the backbone may be left out
    assert report["missing"] == [] and report["shape_mismatch"] == []
    heads = model.roi_heads
    assert heads.context.res5 is not heads.res5
    for (name, ours), (_, context), (_, file) in zip(heads.res5.state_dict().items(),
                                                     heads.context.res5.state_dict().items(),
                                                     src.res5.state_dict().items()):
        assert torch.equal(ours, file) and torch.equal(context, file), name
    # a checkpoint trained with its own context branch keeps it (the alias only fills what is missing)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    trained["roi_heads.context.res5.0.conv1.weight"] += 1.0
    model.load_state_dict(trained)
    from detectres.weights.loading import with_aliases

    assert torch.equal(with_aliases(model, trained, "x")["roi_heads.context.res5.0.conv1.weight"],
                       trained["roi_heads.context.res5.0.conv1.weight"])
