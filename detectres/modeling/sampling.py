"""Sample a fixed-size, class-balanced subset of labelled predictions."""
from __future__ import annotations

import torch
from torch import Tensor


def subsample_labels(
    labels: Tensor, *, num_samples: int, positive_fraction: float, bg_label: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Pick at most ``num_samples`` indices with at most ``positive_fraction`` of them foreground.

    Args:
        labels: (P,) with -1 = ignore, ``bg_label`` = background, any other value >= 0 = foreground.
    Returns:
        ``(pos_idx, neg_idx)``: indices into ``labels``, chosen uniformly at random (from
        ``generator``, on ``labels``' device, when given; else the global generator).
    """
    positive = torch.nonzero((labels != -1) & (labels != bg_label), as_tuple=True)[0]
    negative = torch.nonzero(labels == bg_label, as_tuple=True)[0]
    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)
    perm_pos = torch.randperm(positive.numel(), device=labels.device, generator=generator)[:num_pos]
    perm_neg = torch.randperm(negative.numel(), device=labels.device, generator=generator)[:num_neg]
    return positive[perm_pos], negative[perm_neg]
