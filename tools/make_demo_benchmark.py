#!/usr/bin/env python
"""Write what the GPU demo benchmark needs into OUT: an R101-C4 detectres checkpoint with
deterministic random weights (the Detectron2 fixture's rules: real proposals) and a 720p video.

    python tools/make_demo_benchmark.py OUT [--frames 300]
"""
import argparse
import os

import cv2
import numpy as np

from detectres.config import build_model, checkpoint_config, compose_config
from detectres.data.datasets.coco_names import COCO_CLASSES
from detectres.engine.checkpoint import atomic_torch_save
from detectres.utils.benchmark import init_weights


def write_video(path: str, frames: int, size=(1280, 720), fps: float = 30.0) -> None:
    rng = np.random.default_rng(0)
    background = cv2.resize(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8), size, interpolation=cv2.INTER_CUBIC)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        img = background.copy()
        for k in range(6):
            x = int((i * (3 + k) + 200 * k) % (size[0] - 160))
            cv2.rectangle(img, (x, 80 + 100 * k), (x + 120, 160 + 100 * k), (40 * k, 200, 255 - 40 * k), -1)
        writer.write(img)
    writer.release()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--frames", type=int, default=300)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    cfg = compose_config("train", ["model=r101_c4", "data=coco"])
    model = build_model(cfg.model, num_classes=80)
    init_weights(model, seed=0)
    atomic_torch_save({"model": model.state_dict(), "config": checkpoint_config(cfg), "class_names": list(COCO_CLASSES)},
                      os.path.join(a.out, "r101_c4_random.pth"))
    write_video(os.path.join(a.out, "street_720p.mp4"), a.frames)
    print(f"wrote {a.out}/r101_c4_random.pth and {a.out}/street_720p.mp4 ({a.frames} frames, 1280x720)")


if __name__ == "__main__":
    main()
