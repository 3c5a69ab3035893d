#!/usr/bin/env python
"""Seconds per training iteration and per inference image: detectres R50-C4 vs torchvision's parts.

    python tools/benchmark.py [min_size=480] [rounds=3]

Ends with `train ratio detectres/torchvision: X.XX` and `inference ratio detectres/torchvision: X.XX`.
"""
import hydra
from omegaconf import DictConfig

from detectres.apps.benchmark import main as run_benchmark
from detectres.config import CONFIG_DIR


@hydra.main(config_path=str(CONFIG_DIR), config_name="benchmark", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_benchmark(cfg)


if __name__ == "__main__":
    main()
