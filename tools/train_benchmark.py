#!/usr/bin/env python
"""Training step time and peak GPU memory per precision (default: R101-C4, 800 px, batch 2).

    python tools/train_benchmark.py [model=r101_c4] [min_size=800] [batch=2] [modes=[fp32,bf16,fp16]]
"""
import hydra
from omegaconf import DictConfig

from detectres.apps.train_benchmark import main as run_train_benchmark
from detectres.config import CONFIG_DIR


@hydra.main(config_path=str(CONFIG_DIR), config_name="train_benchmark", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_train_benchmark(cfg)


if __name__ == "__main__":
    main()
