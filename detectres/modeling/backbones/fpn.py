"""Feature Pyramid Network (Lin et al. 2017) on a ResNet, as Detectron2's ``build_resnet_fpn_backbone``.

For each of res2..res5 (strides 4..32) a lateral 1x1 convolution to ``out_channels``; from the top, each
level adds the nearest-neighbour 2x upsampled level above it; a 3x3 output convolution then gives
P2..P5. P6 (stride 64, for the RPN only) is P5 max-pooled with kernel 1, stride 2. Module names follow
Detectron2 (``bottom_up``, ``fpn_lateral{2..5}``, ``fpn_output{2..5}``) so its checkpoints load by name.
"""
from __future__ import annotations

from typing import Annotated

import torch.nn.functional as F
from torch import Tensor, nn

from detectres.config.constraints import Channels, MaxLength, NonEmpty
from detectres.modeling.backbones.resnet import STAGES, ResNet


def xavier_fill(layer: nn.Conv2d) -> nn.Conv2d:
    """Caffe2's XavierFill, as Detectron2 initialises FPN convolutions: U(-sqrt(3/fan_in), +), bias 0."""
    nn.init.kaiming_uniform_(layer.weight, a=1)
    nn.init.zeros_(layer.bias)
    return layer


class FPN(nn.Module):
    """A ResNet with a feature pyramid; ``forward`` returns [P2, ..., P5, P6] (N, out_channels, H/s, W/s).

    What weight loading reads: an ImageNet ResNet's keys (named as in a C4 detector) move under
    ``bottom_up`` (:attr:`imagenet_key_map`), and the pyramid's own convolutions start untrained
    (:attr:`untrained_children`).

    Args:
        bottom_up: the ResNet (any depth and form; its ``freeze_at`` applies).
        in_stages: the ResNet stages the pyramid is built on, consecutive, ending at res5.
        out_channels: width of every pyramid level (256 in the paper).
        top_block: add P6 by max-pooling P5 (the RPN's largest anchors live there).
    """

    imagenet_key_map = {"roi_heads.res5.": "backbone.bottom_up.res5.", "backbone.": "backbone.bottom_up."}
    untrained_children = ("fpn_",)

    def __init__(self, *, bottom_up: ResNet, in_stages: Annotated[list[str], NonEmpty(), MaxLength(4)] = ("res2", "res3", "res4", "res5"),
                 out_channels: Channels = 256, top_block: bool = True):
        super().__init__()
        in_stages = list(in_stages)
        if in_stages[0] not in STAGES or in_stages != list(STAGES[STAGES.index(in_stages[0]):]):
            raise ValueError(f"FPN in_stages must be consecutive ResNet stages ending at res5, got {in_stages}")
        self.bottom_up = bottom_up
        self.in_stages = in_stages
        for stage in in_stages:
            level = int(stage[-1])
            self.add_module(f"fpn_lateral{level}", xavier_fill(nn.Conv2d(bottom_up.out_channels[stage], out_channels, 1)))
            self.add_module(f"fpn_output{level}", xavier_fill(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.top_block = top_block
        self.out_channels = out_channels
        self.strides = [bottom_up.strides[s] for s in in_stages] + ([bottom_up.strides["res5"] * 2] if top_block else [])
        self.size_divisibility = bottom_up.strides[in_stages[-1]]  # every level halves exactly
        self.box_levels = len(in_stages)  # RoIs pool from P2..P5; P6 feeds the RPN only
        self.stride_in_1x1 = bottom_up.stride_in_1x1

    @property
    def level_names(self) -> list[str]:
        """``p2``, ``p3``, ... (the level = log2 of the stride)."""
        return [f"p{s.bit_length() - 1}" for s in self.strides]

    def forward(self, x: Tensor) -> list[Tensor]:
        bottom = self.bottom_up.forward_stages(x, self.in_stages)
        levels = [int(s[-1]) for s in self.in_stages]
        top = getattr(self, f"fpn_lateral{levels[-1]}")(bottom[-1])
        outputs = [getattr(self, f"fpn_output{levels[-1]}")(top)]
        for level, features in zip(reversed(levels[:-1]), reversed(bottom[:-1])):
            top = getattr(self, f"fpn_lateral{level}")(features) + F.interpolate(top, scale_factor=2.0, mode="nearest")
            outputs.insert(0, getattr(self, f"fpn_output{level}")(top))
        if self.top_block:
            outputs.append(F.max_pool2d(outputs[-1], kernel_size=1, stride=2, padding=0))
        return outputs
