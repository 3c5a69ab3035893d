#!/usr/bin/env python
"""Seconds per training iteration and per inference image: detectres R50-C4 vs torchvision's parts.

    python tools/benchmark.py [min_size=480] [rounds=3]

Ends with `train ratio detectres/torchvision: X.XX` and `inference ratio detectres/torchvision: X.XX`.
"""
import json
import os

import hydra
import torch
from omegaconf import DictConfig

from detectres.config import CONFIG_DIR
from detectres.utils.benchmark import annotated_image, run_benchmark


@hydra.main(config_path=str(CONFIG_DIR), config_name="benchmark", version_base="1.3")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(cfg.num_threads or os.cpu_count() or 1)
    image, boxes, classes = annotated_image(cfg.image, cfg.ann_file)
    print(f"{torch.__version__=} {torch.get_num_threads()=} device=cpu fp32={not cfg.amp}")
    r = run_benchmark(image=image, boxes=boxes, classes=classes, min_size=cfg.min_size, max_size=cfg.max_size,
                      rounds=cfg.rounds, warmup=cfg.warmup, amp=cfg.amp)
    print(f"{'':<22}{'detectres':>12}{'torchvision':>13}")
    print(f"{'train s/iter':<22}{r['train_detectres']:>12.3f}{r['train_torchvision']:>13.3f}")
    print(f"{'inference s/img':<22}{r['inference_detectres']:>12.3f}{r['inference_torchvision']:>13.3f}")
    print(f"train ratio detectres/torchvision: {r['train_ratio']:.2f}")
    if cfg.output_dir:
        os.makedirs(cfg.output_dir, exist_ok=True)
        with open(os.path.join(cfg.output_dir, "benchmark.json"), "w") as f:
            json.dump({**r, "min_size": cfg.min_size, "threads": torch.get_num_threads(), "amp": cfg.amp}, f, indent=2)
    print(f"inference ratio detectres/torchvision: {r['inference_ratio']:.2f}")


if __name__ == "__main__":
    main()
