"""Assign each prediction (anchor or proposal) to its best ground-truth box.

Matching returns indices and labels separately: label 1 = foreground, 0 = background,
-1 = ignore. Shapes: G ground-truth boxes, P predictions, ``iou`` is (G, P).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from detectres.config.constraints import Fraction


class Matcher:
    """Threshold IoU into labels.

    ``thresholds=[0.3, 0.7]`` with ``labels=[0, -1, 1]`` means: IoU < 0.3 -> 0, [0.3, 0.7) -> -1,
    >= 0.7 -> 1. ``allow_low_quality_matches`` also makes foreground every prediction that
    has the highest IoU with some ground-truth box (ties included), so no box goes unmatched.
    """

    def __init__(self, *, thresholds: list[Fraction], labels: list[Literal[-1, 0, 1]],
                 allow_low_quality_matches: bool = False):
        self.check_args(thresholds=thresholds, labels=labels)
        self.thresholds = [-float("inf"), *[float(t) for t in thresholds], float("inf")]
        self.labels = [int(v) for v in labels]
        self.allow_low_quality_matches = allow_low_quality_matches

    @staticmethod
    def check_args(*, thresholds: list[float], labels: list[int], **_) -> None:
        """The rules across the arguments (the config check calls this too, before anything is built)."""
        if len(labels) != len(thresholds) + 1:
            raise ValueError(f"a Matcher needs one more label than thresholds, got labels {labels} and thresholds "
                             f"{thresholds}")
        if any(b < a for a, b in zip(thresholds[:-1], thresholds[1:])):
            raise ValueError(f"Matcher thresholds must increase, got {thresholds}")

    def __call__(self, iou: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``matches`` (P,) long: index of the best ground truth (0 when there is none) and
        ``labels`` (P,) int8 in {-1, 0, 1}. With G == 0 every prediction is background."""
        num_pred = iou.shape[1]
        if iou.shape[0] == 0:
            matches = iou.new_zeros(num_pred, dtype=torch.long)
            labels = iou.new_full((num_pred,), self.labels[0], dtype=torch.int8)
            return matches, labels
        best_iou, matches = iou.max(dim=0)
        labels = matches.new_ones(num_pred, dtype=torch.int8)
        for label, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            in_range = (best_iou >= low) & (best_iou < high)
            labels[in_range] = label
        if self.allow_low_quality_matches:
            best_per_gt, _ = iou.max(dim=1)
            # Every prediction that ties for the best IoU of some gt box (and overlaps it at all).
            _, pred_idx = torch.nonzero((iou == best_per_gt[:, None]) & (best_per_gt[:, None] > 0), as_tuple=True)
            labels[pred_idx] = 1
        return matches, labels
