"""Samplers: an endless shuffled stream for iteration-based training, grouped by aspect ratio."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import BatchSampler, Sampler


class InfiniteShuffleSampler(Sampler[int]):
    """Yields a fresh permutation of ``range(size)`` forever, from a seeded generator."""

    def __init__(self, size: int, *, seed: int = 0, shuffle: bool = True):
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size = size
        self.seed = seed
        self.shuffle = shuffle

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed)
        while True:
            order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
            yield from order.tolist()


class AspectRatioGroupedBatchSampler(Sampler[list[int]]):
    """Batches whose images are all landscape (w >= h) or all portrait, so padding wastes little."""

    def __init__(self, sampler: Sampler[int], aspect_ratios: list[float], batch_size: int):
        self.sampler = sampler
        self.aspect_ratios = aspect_ratios
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        buckets: list[list[int]] = [[], []]
        for idx in self.sampler:
            bucket = buckets[0 if self.aspect_ratios[idx] >= 1.0 else 1]
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()


def sample_seed(seed: int, position: int) -> int:
    """The seed of the ``position``-th sample of a training stream: its random resize and flip, and the
    anchors and RoIs sampled for it, depend on nothing else (not on ranks, workers or resumes)."""
    return (seed * 1_000_003 + position) % 2**31


class TrainingBatchSampler(Sampler[list[tuple[int, int]]]):
    """Global batches of ``batch_size`` images (all landscape or all portrait when ``aspect_ratios``
    are given), from one seeded endless shuffle that every rank replays; this rank takes its slice.

    Yields lists of ``(index, sample seed)``. Two ranks with ``batch_size // 2`` each see exactly the
    images (and seeds) one process with ``batch_size`` sees. ``start_batch`` skips the first batches
    (indices only, no image is read), so a resumed run continues the same stream.
    """

    def __init__(self, *, size: int, batch_size: int, seed: int = 0, aspect_ratios: list[float] | None = None,
                 rank: int = 0, world_size: int = 1, start_batch: int = 0):
        if batch_size % world_size:
            raise ValueError(f"solver.ims_per_batch={batch_size} (the total over all ranks) must be divisible "
                             f"by the number of ranks, {world_size}")
        self.stream = InfiniteShuffleSampler(size, seed=seed)
        self.batch_size = batch_size
        self.seed = seed
        self.aspect_ratios = aspect_ratios
        self.per_rank = batch_size // world_size
        self.rank = rank
        self.start_batch = start_batch

    def global_batches(self) -> Iterator[list[int]]:
        if self.aspect_ratios is None:
            return iter(BatchSampler(self.stream, self.batch_size, drop_last=True))
        return iter(AspectRatioGroupedBatchSampler(self.stream, self.aspect_ratios, self.batch_size))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        lo, hi = self.rank * self.per_rank, (self.rank + 1) * self.per_rank
        for b, batch in enumerate(self.global_batches()):
            if b >= self.start_batch:
                yield [(i, sample_seed(self.seed, b * self.batch_size + j)) for j, i in enumerate(batch)][lo:hi]


class InferenceSampler(Sampler[int]):
    """This rank's contiguous share of ``range(size)``: concatenated in rank order they are the dataset."""

    def __init__(self, size: int, *, rank: int = 0, world_size: int = 1):
        per = -(-size // world_size)
        self.indices = range(min(size, rank * per), min(size, (rank + 1) * per))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
