"""The backbone contract (``detector.Backbone``): a backbone that is neither a ``ResNet`` nor an ``FPN``, defined
here and honouring only the contract, builds a detector in a single-map and a pyramid form; it trains two
steps, detects, and its TorchScript and ONNX files give the eager detections at three image sizes."""
import os
import subprocess

import pytest
import torch
from export_checks import assert_same_detections, images
from torch import nn

from detectres.apps.export import run_onnx, write_model_files
from detectres.config import compose_config
from detectres.config.builder import build
from detectres.modeling.detector import FasterRCNN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TinyBackbone(nn.Module):
    """Plain strided convolutions; ``levels`` maps (the last ``len(levels)`` of strides 4, 8, 16, 32)."""

    def __init__(self, levels: int):
        super().__init__()
        widths = [16, 24, 32, 32]
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else widths[i - 1], widths[i], 3, stride=4 if i == 0 else 2,
                                             padding=1) for i in range(4))
        self.lateral = nn.ModuleList(nn.Conv2d(widths[i], 32, 1) for i in range(4 - levels, 4))
        self.out_channels = 32
        self.strides = [4, 8, 16, 32][4 - levels:]
        self.size_divisibility = 32 if levels > 1 else 0
        self.box_levels = max(1, levels - 1)  # the coarsest map feeds the RPN only (as FPN's P6 does)
        self.levels = levels

    def forward(self, x):
        maps = []
        for conv in self.convs:
            x = torch.relu(conv(x))
            maps.append(x)
        out = [lat(m) for lat, m in zip(self.lateral, maps[4 - self.levels:])]
        return out[0] if self.levels == 1 else out


def detector(levels: int) -> FasterRCNN:
    sizes = "[" + ",".join(f"[{16 * 2 ** i}]" for i in range(levels)) + "]"
    cfg = compose_config("train", ["model=quickstart_fpn", f"model.rpn.anchor_generator.sizes={sizes}"]).model
    torch.manual_seed(0)
    return FasterRCNN(backbone=TinyBackbone(levels), rpn=build(cfg.rpn, "model.rpn"),
                      roi_heads=build(cfg.roi_heads, "model.roi_heads"), num_classes=2, pixel_mean=[127.5] * 3,
                      pixel_std=[64.0] * 3, size_divisibility=32 if levels > 1 else 0, channels_last=False)


def batch(n: int = 2):
    g = torch.Generator().manual_seed(1)
    items = []
    for i in range(n):
        image = torch.randint(0, 80, (3, 96, 128), dtype=torch.uint8, generator=g)
        image[:, 20:60, 30:90] = 230
        items.append({"image": image, "gt_boxes": torch.tensor([[30.0, 20.0, 90.0, 60.0]]),
                      "gt_classes": torch.tensor([i % 2]), "sample_seed": i})
    return items


@pytest.mark.parametrize("levels", [1, 3], ids=["single-map", "pyramid"])
def test_a_backbone_that_only_honours_the_contract_trains_detects_and_exports(levels, tmp_path):
    model = detector(levels)
    assert type(model.backbone) is TinyBackbone
    assert len(model.rpn.anchor_generator.strides) == levels
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    model.train()
    for _ in range(2):
        losses = model(batch())
        total = sum(losses.values())
        assert torch.isfinite(total)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    model.eval()
    model.roi_heads.score_thresh = 0.0  # an untrained model: keep every detection to compare
    image = batch(1)[0]["image"]
    assert len(model.inference([{"image": image}])[0]["scores"]) > 0
    with torch.no_grad():
        paths = write_model_files(model, image, str(tmp_path))
        scripted = torch.jit.load(paths["torchscript"])
        for array in images():
            eager = model.inference([{"image": torch.from_numpy(array)}])[0]
            assert_same_detections(eager, *run_onnx(paths["onnx"], array))
            assert_same_detections(eager, *scripted(torch.from_numpy(array)))


def test_no_class_tests_on_backbones_outside_the_backbones():
    found = subprocess.run(["grep", "-rnE", r"isinstance\(.*(FPN|ResNet)", "detectres/"], cwd=ROOT,
                           capture_output=True, text=True).stdout.splitlines()
    assert [line for line in found if not line.startswith("detectres/modeling/backbones/")] == []


def test_every_head_gets_the_features_in_one_form_and_names_a_layout_it_cannot_run():
    c4 = compose_config("train", ["model=quickstart"]).model
    fpn = compose_config("train", ["model=quickstart_fpn"]).model
    with pytest.raises(ValueError, match=r"the C4 head \(Res5ROIHeads\) needs a backbone with a stage to run per RoI"):
        FasterRCNN(backbone=TinyBackbone(1), rpn=build(c4.rpn, "model.rpn"), roi_heads=build(c4.roi_heads, "c4"),
                   num_classes=2, pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3)
    with pytest.raises(ValueError, match=r"this backbone has a stage to run per RoI \(C4\): use the C4 head"):
        FasterRCNN(backbone=build(c4.backbone, "model.backbone"), rpn=build(c4.rpn, "model.rpn"),
                   roi_heads=build(fpn.roi_heads, "fpn"), num_classes=2, pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3)
