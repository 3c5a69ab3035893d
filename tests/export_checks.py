"""What the export tests share: test images of three sizes, and eager vs exported detections compared."""
import numpy as np
import torch
from torchvision.ops import box_iou

SIZES = [(96, 128), (150, 200), (192, 256)]  # none of them the traced example's size


def images(sizes=None):
    rng = np.random.default_rng(0)
    for h, w in sizes or SIZES:
        image = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
        image[:, h // 4: h // 2, w // 4: w // 2] = 255  # something box-like to detect
        yield image


def assert_same_detections(ref: dict, boxes, scores, classes):
    boxes, scores, classes = (torch.as_tensor(np.asarray(v)) for v in (boxes, scores, classes))
    assert len(ref["scores"]) > 0 and len(scores) == len(ref["scores"])
    iou = box_iou(ref["pred_boxes"], boxes.float())
    ok = ((ref["pred_classes"][:, None] == classes[None].long()) & (iou >= 0.99)
          & ((ref["scores"][:, None] - scores[None].float()).abs() <= 1e-3))
    assert ok.any(dim=1).all(), f"{int((~ok.any(dim=1)).sum())} of {len(ok)} detections unmatched"
