"""torchvision ImageNet ResNets (``resnetNN-*.pth`` state_dicts) -> detectres backbone names.

torchvision: ``conv1``, ``bn1``, ``layer{1..4}.{j}.conv{k}``/``bn{k}``, ``downsample.{0,1}``, ``fc``.
detectres:   ``stem.conv1`` (+ ``.norm``), ``res{2..5}.{j}.conv{k}`` (+ ``.norm``), ``shortcut``.
torchvision puts the stride on the 3x3 conv, so build the backbone with ``stride_in_1x1=False`` and
feed RGB normalised by ImageNet mean/std (configs/model/r50_c4_tv.yaml, r101_c4_tv.yaml).
"""
from __future__ import annotations

import re

import torch

IMAGENET_RGB_MEAN = [123.675, 116.28, 103.53]
IMAGENET_RGB_STD = [58.395, 57.12, 57.375]


def rename_torchvision_key(key: str) -> str | None:
    """The detectres name of one torchvision ResNet key (None for the classifier ``fc``)."""
    if key.startswith("fc."):
        return None
    if key.startswith("conv1."):
        return "stem.conv1." + key[len("conv1."):]
    if key.startswith("bn1."):
        return "stem.conv1.norm." + key[len("bn1."):]
    m = re.match(r"layer(\d)\.(\d+)\.(.+)", key)
    if m is None:
        raise ValueError(f"not a torchvision ResNet key: {key}")
    stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
    rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
    rest = rest.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
    return f"res{stage}.{block}.{rest}"


def convert_torchvision_resnet(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename a torchvision ResNet state_dict for :class:`detectres.modeling.backbones.ResNet`.

    ``prefix`` is prepended to every name (e.g. "backbone." for a whole detector; see
    :func:`split_for_c4` for the C4 layout). BatchNorm ``num_batches_tracked`` counters are dropped.
    """
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        new = rename_torchvision_key(key)
        if new is not None:
            out[prefix + new] = value
    return out


def split_for_c4(backbone_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Backbone names -> C4 detector names: stem..res4 under ``backbone.``, res5 under ``roi_heads.``."""
    return {
        (f"roi_heads.{k}" if k.startswith("res5.") else f"backbone.{k}"): v for k, v in backbone_state.items()
    }
