"""The prediction application (``tools/predict.py``): a model's detections on images, a folder or a video,
drawn and/or saved as data.

``save=json``: ``detections.json``, one record per image or frame: ``file`` (and ``frame`` for a video),
``height``, ``width`` and ``detections``, each with ``box`` (x1 y1 x2 y2 in the original pixels), ``score``,
``label`` (0..K-1) and ``class``. ``save=csv``: ``detections.csv``, one row per detection with the same
fields. Both keep the detections scoring ``score_thresh`` or more. ``save=coco``: ``coco_instances_results.json``
with every detection the model returns (what COCO scoring needs), for a source that is the model's COCO-format
validation split (its image ids and category ids). ``draw=N|all|0``: how many drawn images (or frames) to
write. Images run ``batch_size`` at a time, with a progress bar.
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Iterator

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from detectres.apps.demo.sources import ImageFolderSource, VideoFileSource, open_source
from detectres.evaluation.coco import coco_results
from detectres.predictor import Detector
from detectres.utils.env import set_threads
from detectres.utils.file_io import atomic_write_text
from detectres.utils.outputs import refuse_overwriting, write_image
from detectres.weights.zoo import ZOO_PREFIX

CSV_FIELDS = ("file", "frame", "height", "width", "x1", "y1", "x2", "y2", "score", "label", "class")


def validation_image_folder(val_cfg: DictConfig) -> str:
    """The folder of the validation images: ``image_dir`` (COCO format) or the first image set's
    ``JPEGImages`` (VOC layout)."""
    if "image_dir" in val_cfg:
        return val_cfg.image_dir
    return os.path.join(val_cfg.root, val_cfg.image_sets[0].split("/")[0], "JPEGImages")


def draw_count(draw: str | int) -> int | None:
    """``draw`` (checked by the schema: a count or "all") as a number of images (None: all)."""
    return None if draw == "all" else int(draw)


def frames(source, max_images: int) -> Iterator[tuple[str, int | None, np.ndarray | None]]:
    """(file, frame index for a video or None, BGR image or None when it does not decode)."""
    video = isinstance(source, VideoFileSource)
    for i, frame in enumerate(source):
        if max_images > 0 and i >= max_images:
            return
        yield (source.path if video else source.paths[frame.index]), (frame.index if video else None), frame.image


def record(file: str, frame: int | None, image: np.ndarray, prediction: dict, thresh: float, names: list[str]) -> dict:
    keep = prediction["scores"] >= thresh
    detections = [{"box": [round(float(v), 2) for v in box], "score": round(float(score), 5), "label": int(label),
                   "class": names[int(label)]}
                  for box, score, label in zip(prediction["boxes"][keep], prediction["scores"][keep],
                                               prediction["labels"][keep])]
    out = {"file": file, "height": int(image.shape[0]), "width": int(image.shape[1]), "detections": detections}
    return {**out, "frame": frame} if frame is not None else out


def csv_text(records: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_FIELDS)
    for r in records:
        for d in r["detections"]:
            writer.writerow([r["file"], r.get("frame", ""), r["height"], r["width"], *d["box"], d["score"], d["label"],
                             d["class"]])
    return buffer.getvalue()


def coco_ids(detector: Detector, source: str) -> tuple[dict[str, int], list[int]]:
    """Image file -> image id, and label -> category id, of the model's COCO-format validation split, which
    ``source`` must be (``save=coco``)."""
    from detectres.config.builder import build

    val = detector.config.data.val
    if "ann_file" not in val or os.path.realpath(source) != os.path.realpath(val.image_dir):
        raise ValueError(f"save=coco needs source to be the model's COCO-format validation images "
                         f"({val.get('image_dir', 'none: its data is not COCO-format')}), not {source}")
    records = build(val, "data.val")
    ids = {os.path.realpath(records.image_path(i)): i for i in records.image_ids}
    return ids, records.label_to_category_id


def drawn_path(output_dir: str, file: str, frame: int | None) -> str:
    if frame is None:
        return os.path.join(output_dir, os.path.basename(file))  # names and formats kept
    return os.path.join(output_dir, f"{os.path.splitext(os.path.basename(file))[0]}_{frame:06d}.jpg")


class Outputs:
    """What one prediction run writes: drawn images, and the records of ``save``."""

    def __init__(self, cfg: DictConfig, detector: Detector, source: str, output_dir: str):
        self.cfg, self.detector, self.output_dir = cfg, detector, output_dir
        self.draw_left = draw_count(cfg.draw)
        self.records: list[dict] = []
        self.coco: list[dict] = []
        self.ids, self.categories = coco_ids(detector, source) if cfg.save == "coco" else ({}, [])
        self.drawn: list[str] = []

    def add(self, file: str, frame: int | None, image: np.ndarray, prediction: dict) -> None:
        names, thresh = self.detector.class_names, self.cfg.score_thresh
        if self.cfg.save in ("json", "csv"):
            self.records.append(record(file, frame, image, prediction, thresh, names))
        elif self.cfg.save == "coco":
            self.coco += coco_results(self.ids[os.path.realpath(file)], prediction["boxes"].tolist(),
                                      prediction["scores"].tolist(), prediction["labels"].tolist(), self.categories)
        if self.draw_left is None or len(self.drawn) < self.draw_left:
            path = drawn_path(self.output_dir, file, frame)
            self.drawn.append(write_image(path, self.detector.draw(image, prediction, thresh)))

    def save(self) -> str | None:
        name = {"json": "detections.json", "csv": "detections.csv", "coco": "coco_instances_results.json"}.get(
            self.cfg.save)
        if name is None:
            return None
        text = {"json": lambda: json.dumps(self.records, indent=1), "csv": lambda: csv_text(self.records),
                "coco": lambda: json.dumps(self.coco)}[self.cfg.save]()
        atomic_write_text(text, os.path.join(self.output_dir, name))
        return os.path.join(self.output_dir, name)


def default_output_dir(weights_file: str) -> str:
    """``predictions/`` beside the weights; for a model zoo name (its file sits in the cache),
    ``outputs/NAME/predictions`` under the working folder."""
    if weights_file.startswith(ZOO_PREFIX):
        return os.path.join("outputs", weights_file[len(ZOO_PREFIX):], "predictions")
    if os.path.isdir(weights_file):  # an export folder
        return os.path.join(weights_file, "predictions")
    return os.path.join(os.path.dirname(os.path.abspath(weights_file)), "predictions")


def predict(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Detections of ``checkpoint=`` (or ``model=... model.weights=``) on ``source`` (an image, a folder, a
    video; null: the validation images of the model's data), drawn and/or saved into ``runtime.output_dir``
    (null: ``predictions/`` beside the weights; ``outputs/NAME/predictions`` for ``zoo:NAME``). Returns the paths
    written."""
    set_threads(cfg.runtime.num_threads)
    detector = Detector.from_app_config(cfg, overrides)
    spec = str(cfg.source or validation_image_folder(detector.config.data.val))
    if spec.isdigit():
        raise ValueError(f"source={spec}: a camera is the demo's (demo/demo.py source={spec}); predict takes an "
                         "image, a folder or a video file")
    source = open_source(spec)
    weights_file = cfg.checkpoint or cfg.model.weights
    output_dir = cfg.runtime.output_dir or default_output_dir(weights_file)
    inputs = source.paths if isinstance(source, ImageFolderSource) else [spec]
    refuse_overwriting([os.path.join(output_dir, os.path.basename(p)) for p in inputs] +
                       [os.path.join(output_dir, n) for n in ("detections.json", "detections.csv",
                                                             "coco_instances_results.json")],
                       [*inputs, weights_file], "runtime.output_dir")
    outputs = Outputs(cfg, detector, spec, output_dir)
    total = len(inputs) if isinstance(source, ImageFolderSource) else (source.frame_count or None)
    if cfg.max_images > 0 and total:
        total = min(total, cfg.max_images)
    done, skipped = run_batches(detector, frames(source, cfg.max_images), outputs, cfg.batch_size, total)
    source.close()
    saved = outputs.save()
    what = "frame(s)" if isinstance(source, VideoFileSource) else "image(s)"
    print(f"wrote {len(outputs.drawn)} image(s) to {output_dir}" + (f"; saved {saved} ({done} {what})" if saved else "")
          + (f"; skipped {len(skipped)} unreadable" if skipped else "")
          + (f"; stopped after {cfg.max_images} of {len(inputs)} images (max_images={cfg.max_images})"
             if cfg.max_images > 0 and isinstance(source, ImageFolderSource) and len(inputs) > cfg.max_images else ""))
    return outputs.drawn + ([saved] if saved else [])


def run_batches(detector: Detector, items, outputs: Outputs, batch_size: int, total: int | None
                ) -> tuple[int, list[str]]:
    """Predict ``items`` ``batch_size`` at a time (a progress bar with ETA); returns (images done, skipped)."""
    # on a terminal only (disable=None): an error line then follows a cleared bar, and logs stay clean
    progress = tqdm(total=total, desc="predict", unit="img", dynamic_ncols=True, leave=False, disable=None)
    try:
        return predict_all(detector, items, outputs, batch_size, progress)
    finally:
        progress.close()


def predict_all(detector: Detector, items, outputs: Outputs, batch_size: int, progress) -> tuple[int, list[str]]:
    batch, done, skipped = [], 0, []

    def flush():
        for (file, frame, image), prediction in zip(batch, detector.predict([b[2] for b in batch])):
            outputs.add(file, frame, image, prediction)
        progress.update(len(batch))
        batch.clear()

    for file, frame, image in items:
        if image is None:
            print(f"{file}{'' if frame is None else f' frame {frame}'}: skipped (cannot decode)")
            skipped.append(file)
            progress.update(1)
            continue
        batch.append((file, frame, image))
        done += 1
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return done, skipped
