"""Data loaders: endless aspect-grouped training batches and ordered test batches."""
from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from detectres.data.samplers import AspectRatioGroupedBatchSampler, InfiniteShuffleSampler


def list_collate(batch: list[dict]) -> list[dict]:
    """Keep a batch as a list of per-image dicts (images differ in size)."""
    return batch


def seed_transforms(dataset: Dataset, seed: int) -> None:
    """Seed the dataset's albumentations pipeline (random sizes and flips) for reproducible runs."""
    transforms = getattr(dataset, "transforms", None)
    if transforms is not None and hasattr(transforms, "set_random_seed"):
        transforms.set_random_seed(seed % 2**31)


def worker_init(worker_id: int) -> None:
    # Workers only decode and resize; one thread each keeps the cores for the model.
    torch.set_num_threads(1)
    info = torch.utils.data.get_worker_info()
    seed_transforms(info.dataset, info.seed)  # differs per worker, follows the main process's seed


def build_train_loader(dataset: Dataset, *, batch_size: int, num_workers: int = 0, seed: int = 0,
                       aspect_ratio_grouping: bool = True) -> DataLoader:
    sampler = InfiniteShuffleSampler(len(dataset), seed=seed)
    if num_workers == 0:
        seed_transforms(dataset, seed)
    ratios = getattr(dataset, "aspect_ratios", None)
    if aspect_ratio_grouping and ratios is not None:
        batch_sampler = AspectRatioGroupedBatchSampler(sampler, ratios, batch_size)
    else:
        batch_sampler = BatchSampler(sampler, batch_size, drop_last=True)
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=list_collate,
                      worker_init_fn=worker_init, persistent_workers=num_workers > 0,
                      prefetch_factor=4 if num_workers > 0 else None)


def build_test_loader(dataset: Dataset, *, batch_size: int = 1, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=list_collate, worker_init_fn=worker_init)


class SkippedImageCounter:
    """Passes ``loader``'s batches through, keeping the messages of images the dataset skipped
    (items carry them in ``skipped``, so this works across loader worker processes)."""

    def __init__(self, loader):
        self.loader = loader
        self.messages: list[str] = []

    def __iter__(self):
        for batch in self.loader:
            for item in batch:
                self.messages.extend(item.get("skipped", ()))
            yield batch
