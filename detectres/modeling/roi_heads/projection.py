"""An exact shortcut for the C4 head at inference: res5's first 1x1 projections before RoIAlign.

A 1x1 convolution followed by FrozenBN is a per-pixel affine map ``W x + b``; RoIAlign is linear in the
features (each output is a weighted sum of pixels, weights independent of the values). So
``conv(RoIAlign(F)) = RoIAlign(W F) + b``: the first res5 block's ``conv1`` and projection shortcut can
run once over the res4 map instead of once per RoI on its 14 x 14 (or strided 7 x 7) grid. At 800 px
with 300 proposals that removes most of the first block's work (R101-C4, torchvision form: 62 of 390
GMAC). The rest of the block (ReLU, 3x3, 1x1, addition, ReLU) runs per RoI as before; the numbers are
the same up to fp32 rounding (tests/test_fast_paths.py); under bf16 autocast the map's projection,
the pooled values and the bias are each rounded to bf16.

Used only where it is exact and cheaper: a standard bottleneck with FrozenBN, RoIAlign, no gradient,
on a CPU (where the strided pooling is the gather form), and more RoI pixels than map pixels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectres.modeling.backbones.norm import ConvNorm, FrozenBatchNorm2d
from detectres.modeling.backbones.resnet import Bottleneck
from detectres.modeling.poolers import RoIPooler


def is_affine_1x1(conv: nn.Module | None) -> bool:
    return (isinstance(conv, ConvNorm) and conv.kernel_size == (1, 1) and conv.groups == 1
            and isinstance(conv.norm, FrozenBatchNorm2d))


def projects_first(block: nn.Module, pooler: RoIPooler, features: Tensor, num_rois: int) -> bool:
    """Whether :func:`project_then_pool` applies to ``block`` and does less work than pooling first."""
    if not (type(block) is Bottleneck and is_affine_1x1(block.conv1) and is_affine_1x1(block.shortcut)
            and pooler.kind == "align" and pooler.gathers(features) and not torch.is_grad_enabled()):
        return False
    n, c, h, w = features.shape
    s = pooler.output_size
    per_roi = sum(len(range(0, s, conv.stride[0])) ** 2 * conv.out_channels for conv in (block.conv1, block.shortcut))
    per_pixel = block.conv1.out_channels + block.shortcut.out_channels
    return num_rois * per_roi > n * h * w * per_pixel


def project_then_pool(block: Bottleneck, pooler: RoIPooler, features: Tensor, boxes: list[Tensor]) -> Tensor:
    """``block(pooler(features, boxes))`` with the 1x1 projections applied before pooling."""
    device = features.device.type
    w1, b1 = block.conv1.folded_weight(device)
    ws, bs = block.shortcut.folded_weight(device)
    branch = pooler(F.conv2d(features, w1), boxes, stride=block.conv1.stride[0])
    shortcut = pooler(F.conv2d(features, ws), boxes, stride=block.shortcut.stride[0])
    out = block.conv2.act(F.relu_(branch.add_(b1.view(1, -1, 1, 1))), relu=True)  # the pooled tensors are ours
    return block.conv3.act(out, relu=True, residual=shortcut.add_(bs.view(1, -1, 1, 1)))


def spatial_mean(x: Tensor) -> Tensor:
    """(R, C, H, W) -> (R, C) mean. A half-precision channels-last map is summed as a matrix product
    (fp32 accumulation; the half-precision mean reduction is several times slower on CPUs)."""
    if x.dtype == torch.float32 or not x.is_contiguous(memory_format=torch.channels_last):
        return x.mean(dim=(2, 3))
    r, c = x.shape[:2]
    rows = x.permute(0, 2, 3, 1).reshape(r, -1, c)
    return torch.matmul(rows.new_ones(1, rows.shape[1]), rows).squeeze(1).float() / rows.shape[1]
