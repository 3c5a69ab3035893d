"""The data-check application (``tools/check_data.py``): load each split with the configured checks and
report every problem; with ``draw=N``, also draw the first N samples of each split as the model sees them
(training: after the training transforms, each with its own seed; validation: the images as they are),
boxes and class names on them, and one mosaic of them per split."""
from __future__ import annotations

import json
import os
from dataclasses import asdict

import numpy as np
from omegaconf import DictConfig, OmegaConf

from detectres.config.builder import build
from detectres.data.build import prepare_data, train_transforms
from detectres.data.checks import DataCheckError, DataReport
from detectres.data.datasets.base import DetectionDataset
from detectres.data.samples import DetectionSamples
from detectres.utils.env import set_threads
from detectres.utils.file_io import atomic_write_text
from detectres.utils.outputs import refuse_overwriting, write_image
from detectres.utils.visualizer import draw_detections, mosaic

DRAW_DIR = os.path.join("outputs", "check_data")  # where draw=N writes when runtime.output_dir is null


def load_split(cfg: DictConfig, split: str) -> tuple[DataReport | None, DetectionDataset | None, str]:
    """(report, the split's records, error) for one split, the images read at ``cfg.scan`` level."""
    try:
        dataset = build(cfg.data[split], f"data.{split}")
    except DataCheckError as e:
        return e.report, None, str(e)
    except (FileNotFoundError, ValueError, KeyError) as e:
        return None, None, f"{type(e).__name__}: {e}"
    return dataset.report, dataset, ""


def draw_samples(cfg: DictConfig, split: str, records: DetectionDataset, out_dir: str) -> list[str]:
    """The first ``cfg.draw`` samples of ``split`` drawn into ``out_dir/split/`` (training ones after the
    training transforms, sample i with seed i) and their mosaic as ``out_dir/split_mosaic.png``."""
    samples = DetectionSamples(records=records, transforms=train_transforms(cfg) if split == "train" else None)
    drawn, paths = [], []
    for i in range(min(cfg.draw, len(samples))):
        item = samples[(i, i)] if split == "train" else samples[i]
        if "image" not in item:  # failed to load: the report says so
            continue
        image = np.ascontiguousarray(item["image"].numpy().transpose(1, 2, 0))
        drawn.append(draw_detections(image, item["gt_boxes"].numpy(), None, item["gt_classes"].numpy(),
                                     records.class_names))
        stem = os.path.splitext(os.path.basename(item["file_name"]))[0]
        paths.append(os.path.join(out_dir, split, f"{i:04d}_{stem}.png"))
    image_dirs = {os.path.dirname(os.path.realpath(records.image_path(i))) for i in records.image_ids}
    for folder in (out_dir, os.path.join(out_dir, split)):
        if os.path.realpath(folder) in image_dirs:
            raise ValueError(f"runtime.output_dir={out_dir} would put drawn samples into {folder}, a folder of the "
                             f"{split} images: choose another runtime.output_dir")
    for path, image in zip(paths, drawn):
        write_image(path, image)
    if drawn:
        paths.append(write_image(os.path.join(out_dir, f"{split}_mosaic.png"), mosaic(drawn)))
    return paths


def check_data(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Print each split's report; returns the exit status (1 if a split cannot be used)."""
    set_threads(cfg.runtime.num_threads)
    OmegaConf.update(cfg, "data.checks.scan", cfg.scan)
    prepare_data(cfg.data)
    status, everything = 0, {}
    for split in cfg.splits:
        report, records, error = load_split(cfg, split)
        kept = len(records) if records is not None else 0
        print(f"== {split}")
        if report is not None:
            print(report.summary(examples=cfg.show))
        if error:
            print(f"cannot use the {split} split:\n{error}" if report is None else f"{split}: stops before training "
                  f"({len(report.fatal)} problem(s) with policy 'fail')")
            status = 1
        else:
            print(f"{split}: {kept} images usable")
        if cfg.draw and records is not None:
            out_dir = cfg.runtime.output_dir or DRAW_DIR
            drawn = draw_samples(cfg, split, records, out_dir)
            what = "after the training transforms" if split == "train" else "as they are"
            print(f"drew {max(0, len(drawn) - 1)} {split} samples {what} into {os.path.join(out_dir, split)}, "
                  f"mosaic {os.path.join(out_dir, split + '_mosaic.png')}")
        everything[split] = {"usable_images": kept, "error": error,
                             "problems": [asdict(p) for p in (report.problems if report else [])]}
    if cfg.output:
        inputs = [v for split in cfg.splits for v in cfg.data[split].values() if isinstance(v, str) and os.path.isfile(v)]
        refuse_overwriting([cfg.output], inputs, "output")
        atomic_write_text(json.dumps(everything, indent=2), cfg.output)
        print(f"wrote {cfg.output}")
    return status
