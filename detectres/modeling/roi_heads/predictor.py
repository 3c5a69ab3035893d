"""Class scores and class-specific box deltas for pooled RoI features (the Fast R-CNN output layers).

Layout follows Detectron2: K+1 logits with background LAST (index K), and K * 4 deltas (no
background box). Shapes: R RoIs, D feature size, K foreground classes.
"""
from __future__ import annotations

from torch import Tensor, nn

from detectres.utils.amp import fp32_only


class FastRCNNPredictor(nn.Module):
    starts_untrained = True  # an ImageNet backbone file has none of it (see weights/loading.py)
    class_specific = True    # sized by the class count: fine-tuning on other classes starts it afresh

    def __init__(self, *, in_channels: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(in_channels, num_classes + 1)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.cls_score.bias, 0.0)
        nn.init.constant_(self.bbox_pred.bias, 0.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (R, D) -> logits (R, K+1), deltas (R, K*4), both computed in fp32 even under autocast
        (the softmax and the box decoding that follow need the precision; the layers are tiny)."""
        with fp32_only(x):
            x = x.float()
            return self.cls_score(x), self.bbox_pred(x)
