"""Data loaders: endless aspect-grouped training batches and ordered test batches."""
from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader, Dataset

from detectres.data.samplers import InferenceSampler, TrainingBatchSampler

logger = logging.getLogger(__name__)


def list_collate(batch: list[dict]) -> list[dict]:
    """Keep a batch as a list of per-image dicts (images differ in size)."""
    return batch


def worker_init(worker_id: int) -> None:
    # Workers only decode and resize; one thread each keeps the cores for the model.
    torch.set_num_threads(1)


def build_train_loader(dataset: Dataset, *, batch_size: int, num_workers: int = 0, seed: int = 0,
                       aspect_ratio_grouping: bool = True, rank: int = 0, world_size: int = 1,
                       start_iter: int = 0) -> DataLoader:
    """Endless batches of this rank's ``batch_size // world_size`` images (``batch_size`` is the total
    over ranks), items seeded by their place in the stream (see :class:`TrainingBatchSampler`);
    ``start_iter`` continues the stream where a resumed run stopped."""
    ratios = getattr(dataset, "aspect_ratios", None) if aspect_ratio_grouping else None
    batch_sampler = TrainingBatchSampler(size=len(dataset), batch_size=batch_size, seed=seed, aspect_ratios=ratios,
                                         rank=rank, world_size=world_size, start_batch=start_iter)
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=list_collate,
                      worker_init_fn=worker_init, persistent_workers=num_workers > 0,
                      prefetch_factor=4 if num_workers > 0 else None)


def build_test_loader(dataset: Dataset, *, batch_size: int = 1, num_workers: int = 0, rank: int = 0,
                      world_size: int = 1) -> DataLoader:
    """This rank's contiguous share of ``dataset``, in order."""
    return DataLoader(dataset, batch_size=batch_size, sampler=InferenceSampler(len(dataset), rank=rank,
                                                                              world_size=world_size),
                      num_workers=num_workers, collate_fn=list_collate, worker_init_fn=worker_init)


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

    def report(self) -> None:
        if self.messages:
            logger.warning("%d image(s) failed to load during training and were skipped:\n  %s",
                           len(self.messages), "\n  ".join(self.messages))
