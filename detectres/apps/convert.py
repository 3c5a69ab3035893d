"""The conversion application (``tools/convert_weights.py``): write any supported weight file as a
detectres checkpoint.

    python tools/convert_weights.py SRC DST --format {torchvision,msra,detectron2} [--model r101_fpn]

Backbone files (torchvision, msra) load with ``model.weights=DST`` to train from ImageNet; Detectron2
detector files also carry their config and class names (``tools/test_net.py checkpoint=DST``).
"""
from __future__ import annotations

import argparse
import re

from detectres.apps.cli import USER_ERRORS, fail
from detectres.config import checkpoint_config, compose_config
from detectres.utils.file_io import atomic_torch_save
from detectres.weights.loading import FORMATS, read_weights

RES4_BLOCKS_TO_DEPTH = {6: 50, 23: 101, 36: 152}


def infer_model_name(state_dict: dict, fmt: str) -> str:
    """``r{depth}_c4`` or ``r{depth}_fpn`` (``_tv`` for torchvision weights) from the number of res4 blocks
    and whether the file has a pyramid (backbone files, which have none, get the C4 name)."""
    layout = "fpn" if any(k.startswith("backbone.fpn_") for k in state_dict) else "c4"
    trunk = "backbone.bottom_up." if layout == "fpn" else "backbone."
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(re.escape(trunk) + r"res4\.(\d+)\.", k))}
    if not any(k.startswith(trunk + "res4.0.conv3.") for k in state_dict):
        raise ValueError("basic-block (ResNet-18/34) weights: pass --model (e.g. r18_c4)")
    depth = RES4_BLOCKS_TO_DEPTH.get(len(blocks))
    if depth is None:
        raise ValueError(f"cannot tell the ResNet depth from {len(blocks)} res4 blocks; pass --model")
    return f"r{depth}_{layout}" + ("_tv" if fmt == "torchvision" else "")


def convert_file(src: str, dst: str, fmt: str, model: str | None = None) -> dict:
    """Convert ``src`` (in ``fmt``) to a detectres checkpoint at ``dst``; returns what was written.

    Detector weights (detectron2) carry a full config (``model``, COCO data when they have 80
    classes) and class names, so ``tools/test_net.py checkpoint=DST`` runs them directly.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    weights = read_weights(src, fmt)
    name = model or infer_model_name(weights.state_dict, weights.format)
    meta = {**weights.meta, "format": weights.format, "source": src, "backbone_only": weights.backbone_only}
    out = {"model": weights.state_dict, "meta": meta, "model_name": name}
    if not weights.backbone_only:
        cls = weights.state_dict["roi_heads.box_predictor.cls_score.weight"]
        overrides = [f"model={name}", f"model.num_classes={cls.shape[0] - 1}"]
        if weights.class_names is not None:
            overrides.append("data=coco")
            out["class_names"] = weights.class_names
        out["config"] = checkpoint_config(compose_config("train", overrides))
    atomic_torch_save(out, dst)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Convert torchvision / MSRA / Detectron2 weights into a detectres "
                                            "checkpoint.")
    p.add_argument("src", help="the file to convert (.pth or .pkl)")
    p.add_argument("dst", help="where to write the detectres checkpoint (.pth)")
    p.add_argument("--format", required=True, choices=FORMATS[1:], help="the format of SRC")
    p.add_argument("--model", default=None, help="model config name (default: from the weights, e.g. r50_c4)")
    a = p.parse_args(argv)
    try:
        out = convert_file(a.src, a.dst, a.format, a.model)
    except USER_ERRORS as e:
        fail(e)
    n = sum(t.numel() for t in out["model"].values())
    kind = "backbone" if out["meta"]["backbone_only"] else "detector"
    print(f"wrote {a.dst}: {len(out['model'])} tensors ({n:,} elements), {kind} weights for model={out['model_name']}, "
          f"input {out['meta']['input_format']} mean {out['meta']['pixel_mean']} std {out['meta']['pixel_std']}")
    return 0
