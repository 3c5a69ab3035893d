"""MSRA / Detectron ImageNet ResNets (``R-50.pkl``, ``R-101.pkl``): Caffe2 names -> detectres names.

Caffe2: ``conv1_w``, ``res_conv1_bn_{s,b}``, ``res{2..5}_{i}_branch{1,2a,2b,2c}_w`` and ``..._bn_{s,b}``
(an affine channel: y = x * s + b, no statistics), ``fc1000_{w,b}``. The stride is on the 1x1 conv
and the input is BGR in 0..255 minus the pixel mean (103.53, 116.28, 123.675), std 1.
"""
from __future__ import annotations

import re

import numpy as np
import torch

MSRA_BGR_MEAN = [103.53, 116.28, 123.675]
MSRA_STD = [1.0, 1.0, 1.0]
FROZEN_BN_EPS = 1e-5

_BRANCH = {"1": "shortcut", "2a": "conv1", "2b": "conv2", "2c": "conv3"}
_BN_SUFFIX = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_BLOCK_KEY = re.compile(r"res(\d)_(\d+)_branch(1|2a|2b|2c)(?:_w|_bn_(s|b|rm|riv))")


def rename_msra_key(key: str) -> str | None:
    """The detectres backbone name of one Caffe2 key (None for the classifier and solver state)."""
    if key.startswith("fc1000_") or key.endswith("_momentum") or key in ("lr", "weight_order", "model_iter"):
        return None
    if key == "conv1_w":
        return "stem.conv1.weight"
    m = re.fullmatch(r"res_conv1_bn_(s|b|rm|riv)", key)
    if m:
        return f"stem.conv1.norm.{_BN_SUFFIX[m.group(1)]}"
    m = _BLOCK_KEY.fullmatch(key)
    if m is None:
        raise ValueError(f"not an MSRA ResNet key: {key}")
    stage, block, branch, bn = m.groups()
    conv = f"res{stage}.{block}.{_BRANCH[branch]}"
    return f"{conv}.weight" if bn is None else f"{conv}.norm.{_BN_SUFFIX[bn]}"


def convert_msra_resnet(blobs: dict) -> dict[str, torch.Tensor]:
    """Caffe2 blobs (name -> numpy array; a ``blobs`` sub-dict is unwrapped) -> backbone state_dict.

    Affine channels become FrozenBN with running_mean 0 and running_var 1 - eps, so the layer
    computes exactly x * s + b.
    """
    if "blobs" in blobs and isinstance(blobs["blobs"], dict):
        blobs = blobs["blobs"]
    out: dict[str, torch.Tensor] = {}
    for key, value in blobs.items():
        new = rename_msra_key(key)
        if new is not None:
            out[new] = torch.from_numpy(np.asarray(value, dtype=np.float32, order="C"))
    for key in [k for k in out if k.endswith(".norm.weight")]:
        base = key[: -len("weight")]
        out.setdefault(base + "running_mean", torch.zeros_like(out[key]))
        out.setdefault(base + "running_var", torch.full_like(out[key], 1.0 - FROZEN_BN_EPS))
    return out
