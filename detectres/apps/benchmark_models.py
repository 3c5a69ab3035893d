"""The models the benchmarks compare, built with the same deterministic weights: detectres and
torchvision-assembled R-C4, detectres R50-FPN and torchvision's ``fasterrcnn_resnet50_fpn``.

C4 (both): ResNet-50/101 (stride on the 3x3, FrozenBN, stem + res2 frozen) cut after layer3/res4,
15 anchors (sizes 32..512 x ratios 0.5/1/2), 14x14 RoIAlign, layer4/res5 + average pool as the box
head, 81 classes, RPN 12000/2000 proposals (train) and 6000/300 (test), 512 RoIs per image.

FPN: torchvision's model as its ``fasterrcnn_resnet50_fpn`` builds it for fine-tuning from ImageNet
weights (FrozenBN, conv1 + layer1 frozen: ``trainable_backbone_layers=3``), 81 classes, with Detectron2's
proposal counts in both models (2000 per level / 1000 per image in training, 1000 / 1000 at test); both in
the torchvision form (stride on the 3x3) and RGB input. torchvision's box pooler keeps its default
sampling ratio 2; detectres pools as Detectron2 (adaptive, ratio 0).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator as TVAnchorGenerator
from torchvision.ops import FrozenBatchNorm2d as TVFrozenBN
from torchvision.ops import MultiScaleRoIAlign

from detectres.config import compose_config
from detectres.modeling.backbones.norm import FrozenBatchNorm2d
from detectres.modeling.build import build_model
from detectres.weights.torchvision import IMAGENET_RGB_MEAN, IMAGENET_RGB_STD

FPN_PROPOSALS = {"pre_train": 2000, "post_train": 1000, "pre_test": 1000, "post_test": 1000}


@torch.no_grad()
def init_weights(model: nn.Module, seed: int = 0) -> None:
    """The Detectron2 fixture's rules: FrozenBN U(0.2,0.6)/N(0,.05)/N(0,.05)/U(0.8,1.2), He-normal
    convs, RPN output convs std 0.01, Linear std 0.01 (box deltas 0.001), zero biases."""
    g = torch.Generator().manual_seed(seed)
    for name, m in model.named_modules():
        if isinstance(m, (FrozenBatchNorm2d, TVFrozenBN)):
            n = m.weight.numel()
            m.weight.copy_(0.2 + 0.4 * torch.rand(n, generator=g))
            m.bias.copy_(0.05 * torch.randn(n, generator=g))
            m.running_mean.copy_(0.05 * torch.randn(n, generator=g))
            m.running_var.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
        elif isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            rpn_out = any(k in name for k in ("objectness_logits", "anchor_deltas", "cls_logits", "rpn.head.bbox_pred"))
            std = 0.01 if rpn_out else (2.0 / fan_in) ** 0.5
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.Linear):
            std = 0.001 if "bbox_pred" in name else 0.01
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
            m.bias.zero_()


class Layer4Head(nn.Module):
    def __init__(self, layer4: nn.Module):
        super().__init__()
        self.layer4 = layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(x).mean(dim=(2, 3))


def build_torchvision_c4(min_size: int, max_size: int, depth: int = 50, post_nms_topk_test: int = 300) -> TVFasterRCNN:
    resnet = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}[depth](
        weights=None, norm_layer=TVFrozenBN)
    body = nn.Sequential(OrderedDict(
        (k, getattr(resnet, k)) for k in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")))
    for p in [*resnet.conv1.parameters(), *resnet.layer1.parameters()]:
        p.requires_grad_(False)  # freeze_at=2, as the detectres model
    body.out_channels = 1024
    return TVFasterRCNN(
        body, num_classes=None, min_size=min_size, max_size=max_size,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
        rpn_anchor_generator=TVAnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)),
        rpn_pre_nms_top_n_train=12000, rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000, rpn_post_nms_top_n_test=post_nms_topk_test,
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=0),
        box_head=Layer4Head(resnet.layer4), box_predictor=FastRCNNPredictor(2048, 81),
        box_batch_size_per_image=512,
        size_divisible=1,  # no padding to /32: the same input size as detectres (C4 needs none)
    )


def build_detectres_c4(channels_last: bool = True, depth: int = 50, post_nms_topk_test: int = 300) -> nn.Module:
    """The torchvision-form (stride on the 3x3) R-C4 in torchvision's input convention."""
    cfg = compose_config("train", [
        f"model=r{depth}_c4", "model.backbone.stride_in_1x1=false", "model.input_format=RGB",
        f"model.pixel_mean={IMAGENET_RGB_MEAN}", f"model.pixel_std={IMAGENET_RGB_STD}",
        f"model.channels_last={str(channels_last).lower()}", f"model.rpn.post_nms_topk_test={post_nms_topk_test}"])
    return build_model(cfg.model, num_classes=80)

def build_torchvision_fpn(min_size: int, max_size: int) -> TVFasterRCNN:
    resnet = torchvision.models.resnet50(weights=None, norm_layer=TVFrozenBN)
    return TVFasterRCNN(
        _resnet_fpn_extractor(resnet, trainable_layers=3), num_classes=81, min_size=min_size, max_size=max_size,
        rpn_pre_nms_top_n_train=FPN_PROPOSALS["pre_train"], rpn_post_nms_top_n_train=FPN_PROPOSALS["post_train"],
        rpn_pre_nms_top_n_test=FPN_PROPOSALS["pre_test"], rpn_post_nms_top_n_test=FPN_PROPOSALS["post_test"])


def build_detectres_fpn() -> nn.Module:
    """R50-FPN in the torchvision form and input convention, with the same proposal counts."""
    p = FPN_PROPOSALS
    cfg = compose_config("train", [
        "model=r50_fpn_tv", f"model.rpn.pre_nms_topk_train={p['pre_train']}",
        f"model.rpn.post_nms_topk_train={p['post_train']}", f"model.rpn.pre_nms_topk_test={p['pre_test']}",
        f"model.rpn.post_nms_topk_test={p['post_test']}"])
    return build_model(cfg.model, num_classes=80)
