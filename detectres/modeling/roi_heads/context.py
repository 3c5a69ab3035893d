"""Global context (He et al., COCO 2015): the whole-image box pooled through the per-RoI head.

The global feature of each image is concatenated with the feature of every RoI in it before the
class and box layers, so the predictor sees (R, 2D) instead of (R, D). ``shared=True`` runs the
global box through the same res5 as the RoIs; ``shared=False`` gives it res5 weights of its own
(initialised as a copy; pretrained res5 weights fill both, see ``Res5ROIHeads.weight_aliases``).
Trained end to end like the rest of the head.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

from detectres.modeling.postprocessing import row_image_index
from detectres.structures.image_list import image_sizes_tensor


class GlobalContext(nn.Module):
    def __init__(self, res5: nn.Module, *, shared: bool):
        super().__init__()
        self.shared = shared
        # A separate copy is registered as a child; the shared one is only referenced at call time.
        self.res5 = None if shared else copy.deepcopy(res5)

    def forward(self, features: Tensor, image_sizes: list[tuple[int, int]],
                run_head: Callable[[list[Tensor], nn.Module], Tensor], res5: nn.Module) -> Tensor:
        """(N, C, H, W) res4 features -> (N, D) global features, one per image. ``run_head(boxes, res5)``
        pools the per-image boxes and runs them through ``res5``."""
        sizes = image_sizes_tensor(image_sizes, features.device).float()
        whole = [torch.cat([torch.zeros_like(hw), hw.flip(0)])[None] for hw in sizes.unbind(0)]
        return run_head(whole, res5 if self.shared else self.res5)


def concat_context(roi_features: Tensor, global_features: Tensor, boxes: list[Tensor]) -> Tensor:
    """(R, D) features of the RoIs ``boxes`` (per image) and (N, D) per-image features -> (R, 2D), each RoI
    with its image's."""
    return torch.cat([roi_features, global_features[row_image_index(boxes)]], dim=1)
