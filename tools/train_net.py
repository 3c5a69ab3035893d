#!/usr/bin/env python
"""Train a detector. No arguments: the quickstart (thin ResNet-C4 on the embedded shapes).

    python tools/train_net.py [model=r50_c4] [data=coco|coco8|custom ...] [solver.max_iter=N] [resume=true]
"""
import hydra
from omegaconf import DictConfig

from detectres.apps.train import train
from detectres.config import CONFIG_DIR


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
