#!/usr/bin/env python
"""Evaluate a detectres checkpoint with pycocotools (box AP), writing eval.json and the results JSON.

    python tools/test_net.py checkpoint=outputs/quickstart/model_final.pth [data=...] [output_dir=DIR]
"""
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from detectres.config import CONFIG_DIR
from detectres.engine.launch import evaluate_from_config


@hydra.main(config_path=str(CONFIG_DIR), config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    evaluate_from_config(cfg, list(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    main()
