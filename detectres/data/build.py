"""Datasets from the ``data`` and ``input`` config nodes."""
from __future__ import annotations

import logging

from omegaconf import DictConfig

from detectres.config.builder import build
from detectres.data.samples import DetectionSamples
from omegaconf import OmegaConf

from detectres.data.transforms import build_augment, build_transforms

logger = logging.getLogger(__name__)


def prepare_data(data_cfg: DictConfig) -> None:
    """Run the dataset's ``generate`` step if it has one (the embedded shapes are made on first use)."""
    if data_cfg.generate is not None:
        build(data_cfg.generate, "data.generate")


def train_transforms(cfg: DictConfig):
    """The training pipeline ``augment`` describes (``configs/augment/``: default = resize + flip)."""
    steps = OmegaConf.to_container(cfg.augment.steps, resolve=True)
    return build_augment(steps, min_visibility=cfg.augment.min_visibility, min_size=cfg.augment.min_size)


def test_transforms(input_cfg: DictConfig):
    return build_transforms(short_edges=int(input_cfg.min_size_test), max_size=input_cfg.max_size_test,
                            interpolation=input_cfg.interpolation)


def build_dataset(cfg: DictConfig, split: str, resize: bool = True) -> DetectionSamples:
    """The samples of ``split``: "train" (training transforms; an image that fails to load is replaced by
    the next one) or "val" (test transforms; it gives a stub naming it). ``resize=False`` keeps the
    original images (for test-time procedures that choose their own sizes). The data check summary of
    the records (``.records``) is logged."""
    prepare_data(cfg.data)
    records = build(cfg.data[split], f"data.{split}")
    log = logger.warning if records.report.problems else logger.info
    log("data check, %s split (%d images): %s", split, len(records), records.report.summary())
    if records.dropped_empty:
        logger.info("%s split: dropped %d image(s) without a usable box (data.%s.filter_empty=false keeps them)",
                    split, records.dropped_empty, split)
    transforms = train_transforms(cfg) if split == "train" else test_transforms(cfg.input)
    return DetectionSamples(records=records, transforms=transforms if resize else None,
                            substitute_bad_images=split == "train")


def build_datasets(cfg: DictConfig) -> tuple[DetectionSamples, DetectionSamples]:
    """The training and validation samples, whose records must list the same classes."""
    train_set = build_dataset(cfg, "train")
    val_set = build_dataset(cfg, "val")
    train, val = train_set.records, val_set.records
    if train.class_names != val.class_names:
        raise ValueError(f"the train and val data list different categories: {train.class_names} vs "
                         f"{val.class_names} (train: {train.name}, val: {val.name})")
    return train_set, val_set


def dataset_class_names(data_cfg: DictConfig) -> list[str]:
    """Class names from the data config: ``class_names`` when it lists them (VOC), else what the training
    split's files name, read without loading the dataset: the categories of a COCO annotation file, or
    the names in a YOLO ``data.yaml``."""
    from detectres.data.datasets.coco import read_categories
    from detectres.data.datasets.yolo import read_data_yaml

    if data_cfg.class_names:
        return list(data_cfg.class_names)
    prepare_data(data_cfg)
    if "ann_file" not in data_cfg.train:
        return read_data_yaml(data_cfg.train.root)["names"]
    return [c["name"] for c in read_categories(data_cfg.train.ann_file)]
