"""The prediction application (``tools/predict.py``): draw a model's detections on images."""
from __future__ import annotations

import os

from omegaconf import DictConfig

from detectres.data.image_io import ImageFileError, list_images, read_image_file
from detectres.predictor import Detector
from detectres.utils.env import set_threads
from detectres.utils.outputs import refuse_overwriting, write_image


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
    images = list_images(source)
    chosen = images[:cfg.max_images] if cfg.max_images > 0 else images
    outputs = {path: os.path.join(output_dir, os.path.basename(path)) for path in chosen}  # names and formats kept
    refuse_overwriting(outputs.values(), [*images, weights_file], "runtime.output_dir")
    written, skipped = [], []
    for path, out_path in outputs.items():
        try:
            image = read_image_file(path)
        except ImageFileError as e:
            print(f"{path}: skipped ({e.detail})")
            skipped.append(path)
            continue
        prediction = detector.predict(image)
        write_image(out_path, detector.draw(image, prediction, cfg.score_thresh))
        kept = int((prediction["scores"] >= cfg.score_thresh).sum())
        print(f"{path}: {kept} detections with score >= {cfg.score_thresh} -> {out_path}")
        written.append(out_path)
    print(f"wrote {len(written)} image(s) to {output_dir}" + (f"; skipped {len(skipped)} unreadable" if skipped else "")
          + (f"; stopped after {len(chosen)} of {len(images)} images (max_images={cfg.max_images})"
             if len(chosen) < len(images) else ""))
    return written
