"""R50-FPN in the benchmark (``tools/benchmark.py``, ``fpn.*`` keys): detectres against torchvision's
``fasterrcnn_resnet50_fpn`` (see :mod:`benchmark_models` for how both are built), and detectres R50-FPN
against detectres R50-C4, in one interleaved run, fp32.
"""
from __future__ import annotations

import numpy as np
import torch

from detectres.apps.benchmark_models import build_detectres_c4, build_detectres_fpn, build_torchvision_fpn, init_weights
from detectres.apps.benchmark_timing import count_proposals, inference_step, interleaved_medians, make_steps, \
    sample_inputs, to_device


def run_fpn_benchmark(*, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, min_size: int, max_size: int,
                      rounds: int, warmup: int, c4_proposals: int, device: str = "cpu", log=print) -> dict:
    """Median seconds of R50-FPN training iterations and inference for detectres and torchvision, and of
    detectres R50-C4 inference (``c4_proposals`` test proposals) on the same input, interleaved."""
    torch.manual_seed(0)
    ours, theirs = build_detectres_fpn().to(device), build_torchvision_fpn(min_size, max_size).to(device)
    c4 = build_detectres_c4(post_nms_topk_test=c4_proposals).to(device)
    for model in (ours, theirs, c4):
        init_weights(model, seed=0)
    ours_in, theirs_in = to_device(*sample_inputs(image, boxes, classes, min_size, max_size), device)
    steps = make_steps(ours, theirs, ours_in, theirs_in, False)
    steps[("inference", "detectres-C4")] = inference_step(c4, lambda: c4.inference([ours_in]), False)
    counts = {name: count_proposals(model, steps[("inference", name)])
              for name, model in (("detectres", ours), ("torchvision", theirs), ("detectres-C4", c4))}
    log(f"R50-FPN input {tuple(ours_in['image'].shape[1:])} (padded to /32 in both); test proposals per image: "
        + ", ".join(f"{k} {v}" for k, v in counts.items()))
    med = interleaved_medians(steps, rounds=rounds, warmup=warmup, device=device, log=log)
    return {
        "input": list(ours_in["image"].shape[1:]), "proposals": counts,
        "train_detectres": med[("train", "detectres")], "train_torchvision": med[("train", "torchvision")],
        "inference_detectres": med[("inference", "detectres")], "inference_torchvision": med[("inference", "torchvision")],
        "inference_c4": med[("inference", "detectres-C4")],
        "train_ratio": med[("train", "detectres")] / med[("train", "torchvision")],
        "inference_ratio": med[("inference", "detectres")] / med[("inference", "torchvision")],
        "fpn_over_c4": med[("inference", "detectres")] / med[("inference", "detectres-C4")],
    }


def print_fpn(r: dict) -> None:
    h, w = r["input"]
    print(f"R50-FPN at {h}x{w} (fp32){'':<3}{'detectres':>12}{'torchvision':>13}")
    print(f"{'train s/iter':<22}{r['train_detectres']:>12.3f}{r['train_torchvision']:>13.3f}")
    print(f"{'inference s/img':<22}{r['inference_detectres']:>12.3f}{r['inference_torchvision']:>13.3f}")
    print(f"detectres R50-C4 inference s/img ({r['proposals']['detectres-C4']} proposals): {r['inference_c4']:.3f}")


def print_fpn_ratio_lines(r: dict) -> None:
    print(f"FPN train ratio detectres/torchvision: {r['train_ratio']:.2f}")
    print(f"FPN inference ratio detectres/torchvision: {r['inference_ratio']:.2f}")
    print(f"inference ratio detectres R50-FPN/R50-C4: {r['fpn_over_c4']:.2f}")
