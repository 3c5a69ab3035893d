"""The detector as one traceable function of one image, for TorchScript and ONNX export.

``ExportableDetector(model)(image)``: ``image`` is (3, H, W) uint8 BGR, already resized by the caller
(the shortest-edge rule of ``input.min_size_test`` / ``max_size_test``, see ``utils/resize.py``); any H
and W work in the exported files. Returns ``boxes`` (D, 4) XYXY in the pixels of ``image``, ``scores``
(D,) and ``classes`` (D,) in 0..K-1, best first: what ``FasterRCNN.inference`` gives for that input
(map the boxes back to the original image by the resize factors). Normalisation is inside.

Every size-dependent number is computed from tensor shapes (so the traced graph keeps them dynamic),
proposal selection and detections use only ops with ONNX forms (TopK, NonZero, NonMaxSuppression,
RoiAlign), and the CPU fast paths (fused oneDNN convolutions, the gather RoIAlign) step aside while
tracing. Not exportable, with a clear error: the global context head (a whole-image box per image)
and every test-time procedure and ensemble (Python loops over scales, flips and models).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from detectres.modeling.detector import FasterRCNN
from detectres.modeling.features import feature_levels
from detectres.modeling.rpn import flatten_rpn_outputs
from detectres.structures.boxes import clip_boxes


class NotExportableError(ValueError):
    """The model holds a part that has no exportable form."""


def dynamic_k(values: Tensor, k: int) -> Tensor | int:
    """min(k, values.shape[-1]) that stays a graph value while tracing (an int otherwise)."""
    if not torch.jit.is_tracing():
        return min(k, values.shape[-1])
    return torch.clamp(torch._shape_as_tensor(values)[-1], max=k)


def pad_to_multiple(x: Tensor, divisor: int) -> Tensor:
    """Zero-pad (C, H, W) bottom and right to multiples of ``divisor`` (as ImageList does), with the sizes
    kept as graph values while tracing."""
    if divisor <= 1:
        return x
    if not torch.jit.is_tracing():
        h, w = x.shape[-2:]
        return F.pad(x, [0, -w % divisor, 0, -h % divisor])
    hw = torch._shape_as_tensor(x)[-2:]
    padded = (hw + (divisor - 1)).div(divisor, rounding_mode="floor") * divisor
    return F.pad(x, [0, padded[1] - hw[1], 0, padded[0] - hw[0]])


class ExportableDetector(nn.Module):
    def __init__(self, model: FasterRCNN):
        super().__init__()
        if not isinstance(model, FasterRCNN):
            raise NotExportableError(f"only a plain FasterRCNN exports; got {type(model).__name__} (test-time "
                                     f"procedures and ensembles loop over scales, flips or models in Python)")
        if getattr(model.roi_heads, "context", None) is not None:
            raise NotExportableError("the global-context head (model.roi_heads.context) does not export: it pools "
                                     "one whole-image box per image; export a model without it")
        self.model = model.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        m = self.model
        x = image.float()
        if m.input_format == "RGB":
            x = x.flip(0)
        x = pad_to_multiple((x - m.pixel_mean) / m.pixel_std, m.size_divisibility)
        x = x[None].contiguous(memory_format=m.memory_format)
        image_hw = torch._shape_as_tensor(image)[1:].to(torch.float32)
        features = m.backbone(x)
        proposals = self.proposals(features, image_hw)
        logits, deltas = m.roi_heads.forward_with_given_boxes(features, [proposals], [(0, 0)])
        return self.detections(logits, deltas, proposals, image_hw)

    def proposals(self, features: Tensor | list[Tensor], image_hw: Tensor) -> Tensor:
        """RPN.select_proposals for one image: top-k per level, decode, clip, drop empty, NMS per level, top-k."""
        rpn = self.model.rpn
        generator = rpn.anchor_generator
        boxes, scores, levels = [], [], []
        for level, x in enumerate(feature_levels(features)):
            logits, deltas = flatten_rpn_outputs(*rpn.head(x))
            anchors = generator._grid(generator.cell_anchors[level], generator.strides[level], *x.shape[-2:])
            top, index = logits[0].topk(dynamic_k(logits[0], rpn.topk_test[0]))
            boxes.append(rpn.box_coder.decode(deltas[0][index], anchors[index]))
            scores.append(top)
            levels.append(torch.full_like(index, level))
        boxes, scores, levels = torch.cat(boxes), torch.cat(scores), torch.cat(levels)
        boxes = clip_boxes(boxes, image_hw[None].expand(boxes.shape[0], 2))
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = ((wh[:, 0] > rpn.min_box_size) & (wh[:, 1] > rpn.min_box_size)
                & torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)).nonzero().squeeze(1)
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        return boxes[batched_nms(boxes, scores, levels, rpn.nms_thresh)[: rpn.topk_test[1]]]

    def detections(self, logits: Tensor, deltas: Tensor, proposals: Tensor, image_hw: Tensor
                   ) -> tuple[Tensor, Tensor, Tensor]:
        """ROIHeads.inference's post-processing for one image (its own ``detections``, no voting)."""
        out = self.model.roi_heads.detections(logits, deltas, proposals, image_hw[None].expand(proposals.shape[0], 2))
        return out["pred_boxes"], out["scores"], out["pred_classes"]
