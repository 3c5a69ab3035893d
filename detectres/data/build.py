"""Datasets from the ``data`` and ``input`` config nodes."""
from __future__ import annotations

import logging

from omegaconf import DictConfig

from detectres.config.builder import build
from detectres.data.datasets.base import DetectionDataset
from detectres.data.transforms import build_transforms

logger = logging.getLogger(__name__)


def prepare_data(data_cfg: DictConfig) -> None:
    """Run the dataset's ``generate`` step if it has one (the embedded shapes are made on first use)."""
    if data_cfg.generate is not None:
        build(data_cfg.generate, "data.generate")


def train_transforms(input_cfg: DictConfig):
    return build_transforms(short_edges=list(input_cfg.min_size_train), max_size=input_cfg.max_size_train,
                            flip_prob=input_cfg.random_flip, interpolation=input_cfg.interpolation)


def test_transforms(input_cfg: DictConfig):
    return build_transforms(short_edges=int(input_cfg.min_size_test), max_size=input_cfg.max_size_test,
                            interpolation=input_cfg.interpolation)


def build_dataset(cfg: DictConfig, split: str, resize: bool = True) -> DetectionDataset:
    """``split`` is "train" (training transforms) or "val" (test transforms); ``resize=False`` keeps
    the original images (for test-time procedures that choose their own sizes). The data check
    summary is logged; in training an image that fails to load is replaced by the next one."""
    prepare_data(cfg.data)
    transforms = train_transforms(cfg.input) if split == "train" else test_transforms(cfg.input)
    dataset = build(cfg.data[split], f"data.{split}", transforms=transforms if resize else None)
    dataset.substitute_bad_images = split == "train"
    log = logger.warning if dataset.report.problems else logger.info
    log("data check, %s split (%d images): %s", split, len(dataset), dataset.report.summary())
    if dataset.dropped_empty:
        logger.info("%s split: dropped %d image(s) without a usable box (data.%s.filter_empty=false keeps them)",
                    split, dataset.dropped_empty, split)
    return dataset


def build_datasets(cfg: DictConfig) -> tuple[DetectionDataset, DetectionDataset]:
    """The training and validation datasets, which must list the same classes."""
    train_set = build_dataset(cfg, "train")
    val_set = build_dataset(cfg, "val")
    if train_set.class_names != val_set.class_names:
        raise ValueError(f"the train and val data list different categories: {train_set.class_names} vs "
                         f"{val_set.class_names} (train: {train_set.name}, val: {val_set.name})")
    return train_set, val_set


def dataset_class_names(data_cfg: DictConfig) -> list[str]:
    """Class names from the data config: ``class_names`` when it lists them (VOC), else the categories of
    the training annotation file (COCO format), read without loading the dataset."""
    from detectres.data.datasets.coco import read_categories

    if data_cfg.class_names:
        return list(data_cfg.class_names)
    prepare_data(data_cfg)
    ann_file = data_cfg.train.ann_file
    return [c["name"] for c in read_categories(ann_file)]
