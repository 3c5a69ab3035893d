"""ResNet-18/34/50/101/152 in three forms, named as Detectron2 names them.

* ``stride_in_1x1=True``: the original MSRA / Detectron2 bottleneck (stride on the first 1x1);
  ``False``: the torchvision form (stride on the 3x3, "ResNet v1.5").
* ``preact=True``: "Identity Mappings in Deep Residual Networks" (norm-ReLU-conv inside the
  branch, nothing after the addition; one final norm-ReLU closes the last stage).

Stages are ``stem`` (stride 4), ``res2`` (4), ``res3`` (8), ``res4`` (16), ``res5`` (32).
The C4 detector runs ``stem..res4`` once per image and ``res5`` once per RoI.
Shapes: N images, C channels, H x W spatial size.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import Annotated, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from detectres.config.constraints import Blocks, Channels, Length, Range
from detectres.modeling.backbones.norm import NORMS, ConvNorm, freeze_module, make_norm

# depth -> (block kind, blocks per stage res2..res5)
DEPTHS: dict[int, tuple[str, list[int]]] = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
}
STAGES = ("res2", "res3", "res4", "res5")


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, stride: int, norm: str, **_: object):
        super().__init__()
        self.shortcut = projection(in_channels, out_channels, stride, norm)
        self.conv1 = ConvNorm(in_channels, out_channels, kernel_size=3, stride=stride, norm=norm)
        self.conv2 = ConvNorm(out_channels, out_channels, kernel_size=3, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1.act(x, relu=True)
        identity = x if self.shortcut is None else self.shortcut.act(x, relu=False)
        return self.conv2.act(out, relu=True, residual=identity)


class Bottleneck(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int, norm: str, bottleneck_channels: int,
        stride_in_1x1: bool,
    ):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.shortcut = projection(in_channels, out_channels, stride, norm)
        self.conv1 = ConvNorm(in_channels, bottleneck_channels, kernel_size=1, stride=s1, norm=norm)
        self.conv2 = ConvNorm(bottleneck_channels, bottleneck_channels, kernel_size=3, stride=s3, norm=norm)
        self.conv3 = ConvNorm(bottleneck_channels, out_channels, kernel_size=1, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1.act(x, relu=True)
        out = self.conv2.act(out, relu=True)
        identity = x if self.shortcut is None else self.shortcut.act(x, relu=False)
        return self.conv3.act(out, relu=True, residual=identity)


class PreActBasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, stride: int, norm: str, **_: object):
        super().__init__()
        self.norm1 = make_norm(norm, in_channels)
        self.shortcut = plain_projection(in_channels, out_channels, stride)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm2 = make_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.norm1(x))
        identity = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.norm2(out)))
        return out + identity


class PreActBottleneck(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int, norm: str, bottleneck_channels: int,
        stride_in_1x1: bool,
    ):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.norm1 = make_norm(norm, in_channels)
        self.shortcut = plain_projection(in_channels, out_channels, stride)
        self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, 1, s1, bias=False)
        self.norm2 = make_norm(norm, bottleneck_channels)
        self.conv2 = nn.Conv2d(bottleneck_channels, bottleneck_channels, 3, s3, 1, bias=False)
        self.norm3 = make_norm(norm, bottleneck_channels)
        self.conv3 = nn.Conv2d(bottleneck_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.norm1(x))
        identity = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.norm2(out)))
        out = self.conv3(F.relu(self.norm3(out)))
        return out + identity


class NormReLU(nn.Module):
    """The closing norm-ReLU of a pre-activation network (after its last block)."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.norm = make_norm(norm, channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(x))


def projection(in_channels: int, out_channels: int, stride: int, norm: str) -> nn.Module | None:
    if in_channels == out_channels and stride == 1:
        return None
    return ConvNorm(in_channels, out_channels, kernel_size=1, stride=stride, norm=norm)


def plain_projection(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    if in_channels == out_channels and stride == 1:
        return None
    return nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)


class Stem(nn.Module):
    """conv 7x7/2 + norm + ReLU + max-pool 3x3/2: stride 4. Pre-activation stems skip the norm."""

    def __init__(self, *, in_channels: int, out_channels: int, norm: str, preact: bool):
        super().__init__()
        if preact:
            self.conv1 = nn.Conv2d(in_channels, out_channels, 7, 2, 3, bias=False)
        else:
            self.conv1 = ConvNorm(in_channels, out_channels, kernel_size=7, stride=2, norm=norm)
        self.preact = preact

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x) if self.preact else self.conv1.act(x, relu=True)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class ResNet(nn.Module):
    """A ResNet trunk returning the output of the last requested stage.

    Args:
        depth: 18, 34, 50, 101 or 152 (sets block kind and counts unless ``num_blocks`` is given).
        stem_channels: stem width (64 in the paper).
        widths: output channels of res2..res5 (default 64/128/256/512 x expansion).
        num_blocks: override of the blocks per stage (e.g. [1, 1, 1, 1] for a tiny net).
        stride_in_1x1: MSRA form (True) or torchvision form (False); bottlenecks only.
        preact: pre-activation form.
        norm: "FrozenBN", "BN" or "GN".
        freeze_at: 0 trains everything, 1 freezes the stem, k freezes the stem and res2..res(k).
    """

    def __init__(
        self,
        *,
        depth: Literal[tuple(DEPTHS)] = 50,  # type: ignore[valid-type]
        stem_channels: Channels = 64,
        widths: Annotated[list[Channels], Length(4)] | None = None,
        num_blocks: Annotated[list[Blocks], Length(4)] | None = None,
        stride_in_1x1: bool = True,
        preact: bool = False,
        norm: Literal[NORMS] = "FrozenBN",  # type: ignore[valid-type]
        freeze_at: Annotated[int, Range(0, 5)] = 2,
        in_channels: Channels = 3,
    ):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
        kind, default_blocks = DEPTHS[depth]
        expansion = 1 if kind == "basic" else 4
        widths = list(widths) if widths is not None else [64 * expansion * 2**i for i in range(4)]
        num_blocks = list(num_blocks) if num_blocks is not None else default_blocks
        if len(widths) != 4 or len(num_blocks) != 4:
            raise ValueError(f"ResNet widths and num_blocks need 4 entries (res2..res5), got {widths}, {num_blocks}")
        block = {("basic", False): BasicBlock, ("basic", True): PreActBasicBlock,
                 ("bottleneck", False): Bottleneck, ("bottleneck", True): PreActBottleneck}[(kind, preact)]
        self.preact = preact
        self.stride_in_1x1 = stride_in_1x1 if kind == "bottleneck" else None
        self.stem = Stem(in_channels=in_channels, out_channels=stem_channels, norm=norm, preact=preact)
        self.out_channels = {"stem": stem_channels}
        self.strides = {"stem": 4}
        prev = stem_channels
        for i, (name, width, count) in enumerate(zip(STAGES, widths, num_blocks)):
            blocks: list[nn.Module] = []
            for j in range(count):
                stride = 2 if (j == 0 and i > 0) else 1
                blocks.append(block(prev, width, stride=stride, norm=norm,
                                    bottleneck_channels=width // expansion, stride_in_1x1=stride_in_1x1))
                prev = width
            if preact and name == "res5":
                blocks.append(NormReLU(width, norm))
            self.add_module(name, nn.Sequential(*blocks))
            self.out_channels[name] = width
            self.strides[name] = 4 * 2**i
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> None:
        for i, name in enumerate(("stem", *STAGES)[:freeze_at]):
            self.add_module(name, freeze_module(getattr(self, name)))

    def detection_parts(self) -> "DetectionParts":
        """The C4 layout (the ResNet paper's): stem..res4 run once per image, res5 run per RoI."""
        return DetectionParts(features=ResNetTrunk(self, out_stage="res4"), per_roi_stage=self.res5,
                              per_roi_channels=self.out_channels["res5"])

    def forward(self, x: Tensor, out_stage: str = "res5") -> Tensor:
        """(N, 3, H, W) -> features of ``out_stage`` (N, C, H / stride, W / stride)."""
        return self.forward_stages(x, (out_stage,))[0]

    def forward_stages(self, x: Tensor, out_stages: tuple[str, ...] | list[str]) -> list[Tensor]:
        """(N, 3, H, W) -> the features of each of ``out_stages`` (in network order), running the network
        only as far as the last of them."""
        unknown = [s for s in out_stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown ResNet stages {unknown}; expected some of {list(STAGES)}")
        x, outputs = self.stem(x), []
        for name in STAGES[: max(STAGES.index(s) for s in out_stages) + 1]:
            x = getattr(self, name)(x)
            if name in out_stages:
                outputs.append(x)
        return outputs


@dataclass
class DetectionParts:
    """How a backbone splits into a detector's parts: ``features`` runs once per image (and honours the
    feature-backbone contract), ``per_roi_stage`` (C4: res5) runs on each pooled RoI, ``per_roi_channels``
    wide."""
    features: nn.Module
    per_roi_stage: nn.Module | None = None
    per_roi_channels: int | None = None


class ResNetTrunk(nn.Module):
    """stem..``out_stage`` of a ResNet (the part of a C4 detector shared by RPN and RoI heads)."""

    def __init__(self, resnet: ResNet, out_stage: str = "res4"):
        super().__init__()
        self.stem = resnet.stem
        names = STAGES[: STAGES.index(out_stage) + 1]
        for name in names:
            self.add_module(name, getattr(resnet, name))
        self.stage_names = names
        self.stride_in_1x1 = resnet.stride_in_1x1
        self.out_channels = resnet.out_channels[out_stage]
        self.stride = resnet.strides[out_stage]
        # the feature-backbone contract (see detectres/modeling/detector.py): one map, no padding needed
        self.strides = [self.stride]
        self.size_divisibility = 0
        self.box_levels = 1

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x
