"""Data loaders: endless aspect-grouped training batches and ordered test batches.

Both take the ``device`` the model runs on: for a GPU, batches arrive in pinned (page-locked) memory,
so the model's ``non_blocking`` copies to the device overlap with its work instead of blocking.
"""
from __future__ import annotations

import logging
from typing import Callable

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


def pins_memory(device: str | torch.device) -> bool:
    """Whether batches for ``device`` should be pinned: only for CUDA (pinning is wasted work on a CPU)."""
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


class MappedDataset(Dataset):
    """``dataset``'s items passed through ``mapper`` (in the loader's worker processes); items without
    an image (one that failed to load) pass through unchanged."""

    def __init__(self, dataset: Dataset, mapper: Callable[[dict], dict]):
        self.dataset = dataset
        self.mapper = mapper

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        return self.mapper(item) if "image" in item else item


def build_train_loader(dataset: Dataset, *, batch_size: int, num_workers: int = 0, seed: int = 0,
                       aspect_ratio_grouping: bool = True, rank: int = 0, world_size: int = 1,
                       start_iter: int = 0, device: str | torch.device = "cpu") -> DataLoader:
    """Endless batches of this rank's ``batch_size // world_size`` images (``batch_size`` is the total
    over ranks), items seeded by their place in the stream (see :class:`TrainingBatchSampler`);
    ``start_iter`` continues the stream where a resumed run stopped."""
    ratios = getattr(dataset, "aspect_ratios", None) if aspect_ratio_grouping else None
    batch_sampler = TrainingBatchSampler(size=len(dataset), batch_size=batch_size, seed=seed, aspect_ratios=ratios,
                                         rank=rank, world_size=world_size, start_batch=start_iter)
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=list_collate,
                      worker_init_fn=worker_init, persistent_workers=num_workers > 0,
                      prefetch_factor=4 if num_workers > 0 else None, pin_memory=pins_memory(device))


def build_test_loader(dataset: Dataset, *, batch_size: int = 1, num_workers: int = 0, rank: int = 0,
                      world_size: int = 1, device: str | torch.device = "cpu",
                      mapper: Callable[[dict], dict] | None = None) -> DataLoader:
    """This rank's contiguous share of ``dataset``, in order; ``mapper`` (e.g. a test-time procedure's
    resizing) runs on each item in the workers, off the process that runs the model."""
    sampler = InferenceSampler(len(dataset), rank=rank, world_size=world_size)
    return DataLoader(MappedDataset(dataset, mapper) if mapper is not None else dataset, batch_size=batch_size,
                      sampler=sampler, num_workers=num_workers, collate_fn=list_collate, worker_init_fn=worker_init,
                      pin_memory=pins_memory(device))


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
