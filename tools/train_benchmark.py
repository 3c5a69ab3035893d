#!/usr/bin/env python
"""Training step time and peak GPU memory per precision (default: R101-C4, 800 px, batch 2).

    python tools/train_benchmark.py [model=r101_c4] [min_size=800] [batch=2] [modes=[fp32,bf16,fp16]]
"""
import json
import os

import hydra
import torch
from omegaconf import DictConfig

from detectres.config import CONFIG_DIR, resolve_device
from detectres.utils.benchmark import annotated_image, sample_inputs
from detectres.utils.train_benchmark import step_figures


@hydra.main(config_path=str(CONFIG_DIR), config_name="train_benchmark", version_base="1.3")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(cfg.num_threads or os.cpu_count() or 1)
    device = resolve_device(cfg.device)
    image, boxes, classes = annotated_image(cfg.image, cfg.ann_file)
    item, _ = sample_inputs(image, boxes, classes, cfg.min_size, cfg.max_size)
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(f"{gpu}; torch {torch.__version__}; input {tuple(item['image'].shape[1:])} x {cfg.batch} images")
    figures = {}
    for mode in cfg.modes:
        f = step_figures(model_cfg=cfg.model, batch=[item] * cfg.batch, mode=mode, iters=cfg.iters,
                         warmup=cfg.warmup, device=device)
        figures[mode] = f
        memory = f"{f['peak_memory_gib']:.2f} GiB" if f["peak_memory_gib"] is not None else "n/a (CPU)"
        print(f"{mode:<5} {f['seconds_per_iter']:.4f} s/iter  peak memory {memory}  loss {f['total_loss']:.3f}")
    if cfg.output_dir:
        os.makedirs(cfg.output_dir, exist_ok=True)
        with open(os.path.join(cfg.output_dir, "train_benchmark.json"), "w") as out:
            json.dump({"device": gpu, "batch": cfg.batch, "min_size": cfg.min_size, **figures}, out, indent=2)


if __name__ == "__main__":
    main()
