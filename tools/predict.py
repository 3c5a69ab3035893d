#!/usr/bin/env python
"""Run a detector on an image or a folder and write images with the detections drawn.

    python tools/predict.py checkpoint=outputs/quickstart_shapes/model_final.pth [source=IMG|DIR]
"""
import hydra
from omegaconf import DictConfig

from detectres.apps.predict import predict
from detectres.config import CONFIG_DIR, task_overrides


@hydra.main(config_path=str(CONFIG_DIR), config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    predict(cfg, task_overrides())


if __name__ == "__main__":
    main()
