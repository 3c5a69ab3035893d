"""The detector as one traceable function of one image, for TorchScript and ONNX export: a thin adapter
around :meth:`FasterRCNN.inference` itself (as Detectron2's tracing adapter is), so the exported graph is the
eager model's preprocessing, proposal selection and post-processing, not a copy of them.

``ExportableDetector(model)(image)``: ``image`` is (3, H, W) uint8 BGR, already resized by the caller
(the shortest-edge rule of ``input.min_size_test`` / ``max_size_test``, see ``utils/resize.py``); any H
and W work in the exported files. Returns ``boxes`` (D, 4) XYXY in the pixels of ``image``, ``scores``
(D,) and ``classes`` (D,) in 0..K-1, best first: what ``FasterRCNN.inference`` gives for that input
(map the boxes back to the original image by the resize factors). Normalisation is inside.

What makes the inference path traceable lives where the path is: while tracing, sizes are graph values
(``ImageList.from_tensors``, the anchor grid, ``rpn.topk_count``), a batch holds one image
(``postprocessing.first_k_per_image``), and the CPU fast paths (fused oneDNN convolutions, the gather
RoIAlign) step aside. Not exportable, with a clear error: every test-time procedure and ensemble (Python
loops over scales, flips and models).
"""
from __future__ import annotations

from torch import Tensor, nn

from detectres.modeling.detector import FasterRCNN


class NotExportableError(ValueError):
    """The model holds a part that has no exportable form."""


class ExportableDetector(nn.Module):
    def __init__(self, model: FasterRCNN):
        super().__init__()
        if not isinstance(model, FasterRCNN):
            raise NotExportableError(f"only a plain FasterRCNN exports; got {type(model).__name__} (test-time "
                                     f"procedures and ensembles loop over scales, flips or models in Python)")
        self.model = model
        self.eval()  # the adapter too: exporters put a module back in the mode it had, which spreads to the model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        [out] = self.model.inference([{"image": image}])
        return out["pred_boxes"], out["scores"], out["pred_classes"]
