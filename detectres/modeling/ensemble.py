"""Ensembles of C4 detectors: proposals unioned, class probabilities and box deltas averaged."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectres.modeling.detector import FasterRCNN
from detectres.modeling.postprocessing import detector_postprocess


class EnsembleDetector(nn.Module):
    """Models sharing classes and input conventions; inference only.

    Per image: every model proposes on its own features; the proposals are unioned; every model
    scores the union; softmax probabilities and deltas are averaged; the first model's RoI heads
    (score threshold, NMS, detections per image) turn them into detections.
    """

    def __init__(self, models: list[FasterRCNN]):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        if len({m.num_classes for m in models}) != 1:
            raise ValueError(f"ensemble members disagree on the class count: {[m.num_classes for m in models]}")
        self.models = nn.ModuleList(models)

    @property
    def num_classes(self) -> int:
        return self.models[0].num_classes

    @torch.no_grad()
    def inference(self, batched_inputs: list[dict]) -> list[dict[str, Tensor]]:
        features, proposals, sizes = [], [], None
        for m in self.models:
            images = m.preprocess(batched_inputs)
            feats = m.backbone(images.tensor)
            features.append(feats)
            proposals.append(m.rpn.inference(feats, images.image_sizes))
            sizes = images.image_sizes
        union = [torch.cat([p[i] for p in proposals]) for i in range(len(batched_inputs))]
        probs, deltas = 0.0, 0.0
        for m, feats in zip(self.models, features):
            logits, d = m.roi_heads.forward_with_given_boxes(feats, union, sizes)
            probs = probs + F.softmax(logits.float(), dim=1)
            deltas = deltas + d.float()
        n = len(self.models)
        log_probs, deltas = torch.log((probs / n).clamp(min=1e-30)), deltas / n
        heads = self.models[0].roi_heads
        counts = [len(u) for u in union]
        return [detector_postprocess(heads.detections(lg, dl, boxes, hw), inputs, hw)
                for lg, dl, boxes, hw, inputs in zip(log_probs.split(counts), deltas.split(counts), union, sizes,
                                                     batched_inputs)]
