#!/usr/bin/env python
"""Run a detectres checkpoint on an image or a folder and write images with the detections drawn.

    python tools/predict.py checkpoint=outputs/quickstart/model_final.pth [input=IMG|DIR] [output_dir=DIR]
"""
import hydra
from omegaconf import DictConfig

from detectres.config import CONFIG_DIR
from detectres.predictor import predict_to_files


@hydra.main(config_path=str(CONFIG_DIR), config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    predict_to_files(cfg.checkpoint, cfg.input, cfg.output_dir, score_thresh=cfg.score_thresh,
                     max_images=cfg.max_images, device=cfg.device)


if __name__ == "__main__":
    main()
