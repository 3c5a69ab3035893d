"""Image + box transforms built on albumentations, boxes kept consistent with the pixels.

Boxes are XYXY ("pascal_voc") in pixels; albumentations carries them normalised, so a resize
leaves them unchanged and a flip mirrors them.
"""
from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np

from detectres.utils.resize import resize_image, shortest_edge_size


class ResizeShortestEdge(A.DualTransform):
    """Resize so the shortest edge is one of ``short_edges`` (random choice when training) and the
    longest is at most ``max_size``."""

    def __init__(self, short_edges: list[int] | int, max_size: int, interpolation: str = "bilinear",
                 p: float = 1.0):
        super().__init__(p=p)
        self.short_edges = [short_edges] if isinstance(short_edges, int) else list(short_edges)
        self.max_size = max_size
        self.interpolation = interpolation

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        short = self.py_random.choice(self.short_edges)  # the pipeline's seeded generator
        return {"out_hw": shortest_edge_size(height, width, short, self.max_size)}

    def apply(self, img: np.ndarray, out_hw: tuple[int, int] = (0, 0), **params: Any) -> np.ndarray:
        return resize_image(img, out_hw, self.interpolation)

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes  # normalised coordinates do not change with a resize

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("short_edges", "max_size", "interpolation")


def build_transforms(*, short_edges: list[int] | int, max_size: int, flip_prob: float = 0.0,
                     interpolation: str = "bilinear") -> A.Compose:
    """The training (``flip_prob`` 0.5, several sizes) or test (one size, no flip) pipeline."""
    steps: list[A.BasicTransform] = [ResizeShortestEdge(short_edges, max_size, interpolation)]
    if flip_prob > 0:
        steps.append(A.HorizontalFlip(p=flip_prob))
    return A.Compose(
        steps,
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.0),
        seed=None,
    )


def apply_transforms(transforms: A.Compose, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``transforms`` on an HxWx3 image and (G, 4) XYXY boxes; returns all three transformed."""
    out = transforms(image=image, bboxes=boxes.reshape(-1, 4), labels=labels)
    new_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
    return out["image"], new_boxes, np.asarray(out["labels"], dtype=np.int64)
