"""Detectron2 Faster R-CNN C4 and FPN checkpoints (model zoo ``model_final_*.pkl`` and ``.pth`` files).

detectres already uses Detectron2's names (C4: ``backbone.stem/res2..res4``, ``roi_heads.res5``; FPN:
``backbone.bottom_up.*``, ``backbone.fpn_lateral/output{2..5}``, ``roi_heads.box_head.fc1/fc2``), class layout (K+1 logits with background last,
K * 4 class-specific deltas) and anchor order (size-major, unrounded); only the RPN's prefix
differs: ``proposal_generator.rpn_head.`` -> ``rpn.head.``.
"""
from __future__ import annotations

import numpy as np
import torch

# Detectron2 buffers that detectres computes instead of storing.
_DROP = ("pixel_mean", "pixel_std", "proposal_generator.anchor_generator.")


def rename_detectron2_key(key: str) -> str | None:
    if key.startswith(_DROP):
        return None
    if key.startswith("proposal_generator.rpn_head."):
        return "rpn.head." + key[len("proposal_generator.rpn_head."):]
    return key


def convert_detectron2(model_state: dict) -> dict[str, torch.Tensor]:
    """A Detectron2 ``model`` dict (numpy arrays or tensors) -> detectres detector state_dict."""
    out = {}
    for key, value in model_state.items():
        new = rename_detectron2_key(key)
        if new is None:
            continue
        tensor = torch.from_numpy(np.asarray(value, order="C")) if isinstance(value, np.ndarray) else value
        out[new] = tensor.float() if tensor.is_floating_point() else tensor
    return out


def is_detectron2_state(state: dict) -> bool:
    return any(k.startswith("proposal_generator.rpn_head.") for k in state)
