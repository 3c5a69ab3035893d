"""The prediction application (``tools/predict.py``): draw a model's detections on images."""
from __future__ import annotations

import os

import cv2
from omegaconf import DictConfig

from detectres.data.image_io import list_images, read_image_file
from detectres.predictor import Detector
from detectres.utils.env import set_threads


def validation_image_folder(val_cfg: DictConfig) -> str:
    """The folder of the validation images: ``image_dir`` (COCO format) or the first image set's
    ``JPEGImages`` (VOC layout)."""
    if "image_dir" in val_cfg:
        return val_cfg.image_dir
    return os.path.join(val_cfg.root, val_cfg.image_sets[0].split("/")[0], "JPEGImages")


def predict(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Draw the detections of ``checkpoint=`` (or ``model=... model.weights=``) on each image of
    ``source`` (an image or a folder; null: the validation images of the model's data) into
    ``runtime.output_dir`` (null: ``predictions/`` beside the weights). Returns the written paths."""
    set_threads(cfg.runtime.num_threads)
    detector = Detector.from_app_config(cfg, overrides)
    source = cfg.source or validation_image_folder(detector.config.data.val)
    weights_file = cfg.checkpoint or cfg.model.weights
    output_dir = cfg.runtime.output_dir or os.path.join(os.path.dirname(os.path.abspath(weights_file)), "predictions")
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for path in list_images(source, cfg.max_images):
        image = read_image_file(path)
        prediction = detector.predict(image)
        out_path = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + ".jpg")
        cv2.imwrite(out_path, detector.draw(image, prediction, cfg.score_thresh))
        kept = int((prediction["scores"] >= cfg.score_thresh).sum())
        print(f"{path}: {kept} detections with score >= {cfg.score_thresh} -> {out_path}")
        written.append(out_path)
    return written
