"""Model-only inference latency (``tools/gpu_latency.py``): one image through ``FasterRCNN.inference``,
timed call by call with the device synchronised, the median after a warm-up.

Default: R101-C4 with the benchmark's deterministic weights (real proposals), 800 px shortest side,
300 test proposals, fp16 autocast, on CUDA. "Model only": the image is already resized and on the
device; normalisation, backbone, RPN, RoI heads and post-processing are timed. cuDNN picks its
kernels once for the fixed input size (``cudnn.benchmark``), as the demo does.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np
import torch

from detectres.apps.benchmark_models import init_weights
from detectres.apps.benchmark_timing import synchronize
from detectres.config import DATA_DIR, compose_config
from detectres.data.image_io import read_image_file
from detectres.modeling.build import build_model
from detectres.utils.amp import autocast_context
from detectres.utils.env import resolve_device
from detectres.utils.resize import resize_shortest_edge

DEFAULT_IMAGE = os.path.join(DATA_DIR, "coco8", "val", "000000000042.jpg")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--model", default="r101_c4", help="a config in configs/model/")
    p.add_argument("--image", default=DEFAULT_IMAGE)
    p.add_argument("--min-size", type=int, default=800)
    p.add_argument("--max-size", type=int, default=1333)
    p.add_argument("--proposals", type=int, default=300, help="RPN proposals kept per image at test time")
    p.add_argument("--amp", default="fp16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    return p.parse_args(argv)


def measure_latency(model: torch.nn.Module, item: dict, amp: str | bool, iters: int, warmup: int) -> list[float]:
    """Seconds per ``model.inference([item])`` call, ``iters`` of them after ``warmup`` untimed ones."""
    device = model.device
    times = []
    with torch.no_grad(), autocast_context(model, amp):
        for i in range(warmup + iters):
            synchronize(device)
            t0 = time.perf_counter()
            model.inference([item])
            synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> dict:
    """Print the device, the input and the median / p90 / min latency in ms; returns them."""
    a = parse_args(argv)
    device = torch.device(resolve_device(a.device))
    cfg = compose_config("train", [f"model={a.model}", f"model.rpn.post_nms_topk_test={a.proposals}"])
    model = build_model(cfg.model, num_classes=80)
    init_weights(model, seed=0)
    model = model.to(device).eval()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    image = resize_shortest_edge(read_image_file(a.image), a.min_size, a.max_size)
    item = {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(device)}
    times = sorted(measure_latency(model, item, False if a.amp == "fp32" else a.amp, a.iters, a.warmup))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    figures = {"median_ms": 1000 * statistics.median(times), "p90_ms": 1000 * times[math.ceil(0.9 * len(times)) - 1],
               "min_ms": 1000 * times[0]}
    print(f"{name}; torch {torch.__version__}; {a.model}, input {tuple(item['image'].shape[1:])}, "
          f"{a.proposals} proposals, {a.amp}; {a.iters} timed calls after {a.warmup}")
    print(f"latency median {figures['median_ms']:.2f} ms  p90 {figures['p90_ms']:.2f} ms  "
          f"min {figures['min_ms']:.2f} ms")
    return figures
