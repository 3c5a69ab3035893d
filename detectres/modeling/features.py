"""The backbone's output as the heads see it: a list of feature levels."""
from __future__ import annotations

from torch import Tensor


def feature_levels(features: Tensor | list[Tensor]) -> list[Tensor]:
    """One (N, C, H, W) map (the C4 trunk's res4) -> [map]; a pyramid's list of levels as it is."""
    return [features] if isinstance(features, Tensor) else list(features)
