#!/usr/bin/env python
"""Evaluate a detectres checkpoint (box AP), writing eval.json and the detections.

    python tools/test_net.py checkpoint=outputs/quickstart_shapes/model_final.pth [data=...] [test=paper]
"""
import hydra
from omegaconf import DictConfig

from detectres.apps.evaluate import evaluate
from detectres.config import CONFIG_DIR, task_overrides


@hydra.main(config_path=str(CONFIG_DIR), config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    evaluate(cfg, task_overrides())


if __name__ == "__main__":
    main()
