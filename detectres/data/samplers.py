"""Samplers: an endless shuffled stream for iteration-based training, grouped by aspect ratio."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


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
