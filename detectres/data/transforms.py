"""Image + box transforms built on albumentations, boxes kept consistent with the pixels.

Boxes are XYXY ("pascal_voc") in pixels; albumentations carries them normalised, so a resize
leaves them unchanged and a flip mirrors them.
"""
from __future__ import annotations

import inspect
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


# -- augmentations as config (configs/augment/) -----------------------------------------------------------
OWN_TRANSFORMS = {"ResizeShortestEdge": ResizeShortestEdge}


class AugmentError(ValueError):
    """A transform in ``augment.steps`` that is unknown or takes no such argument; the message names it."""


def transform_class(name: Any, where: str) -> type:
    """The class a step's ``name`` picks: detectres' own (``ResizeShortestEdge``) or an albumentations
    transform (any subclass of ``BasicTransform`` in the ``albumentations`` namespace); nothing else."""
    cls = OWN_TRANSFORMS.get(name) if isinstance(name, str) else None
    if cls is None and isinstance(name, str) and not name.startswith("_"):
        candidate = getattr(A, name, None)
        cls = candidate if isinstance(candidate, type) and issubclass(candidate, A.BasicTransform) else None
    if cls is None:
        raise AugmentError(f"{where}.name={name!r}: not an albumentations transform (nor ResizeShortestEdge)")
    return cls


def build_step(step: dict, where: str) -> A.BasicTransform:
    """One transform from ``{name: ..., <argument>: <value>, ...}``; an unknown argument or a value the
    transform refuses is an :class:`AugmentError` naming the key."""
    if not isinstance(step, dict) or "name" not in step:
        raise AugmentError(f"{where}: each step is a mapping with a name (an albumentations transform) and its arguments")
    cls = transform_class(step["name"], where)
    args = {k: v for k, v in step.items() if k != "name"}
    accepted = inspect.signature(cls.__init__).parameters
    for key in args:
        if key not in accepted or key == "self":
            raise AugmentError(f"{where}.{key}: not an argument of {step['name']} "
                               f"(it takes {', '.join(k for k in accepted if k not in ('self', 'args', 'kwargs'))})")
    try:
        return cls(**args)
    except Exception as e:  # albumentations validates its arguments (pydantic): say which step
        reason = " ".join(str(e).split())
        raise AugmentError(f"{where}: {step['name']}({', '.join(f'{k}={v!r}' for k, v in args.items())}) is refused: "
                           f"{reason[:300]}") from None


def build_augment(steps: list[dict], *, min_visibility: float = 0.0, min_size: float = 1.0,
                  where: str = "augment.steps") -> A.Compose:
    """The training pipeline of ``augment.steps``. Boxes (XYXY) are clipped to the image after every
    transform; a box is dropped when less than ``min_visibility`` of its area stays in the image or when
    it is narrower or lower than ``min_size`` pixels (so the count never grows and every box is inside)."""
    transforms = [build_step(step, f"{where}.{i}") for i, step in enumerate(steps)]
    return A.Compose(transforms, bbox_params=A.BboxParams(
        format="pascal_voc", label_fields=["labels"], min_visibility=min_visibility, min_width=min_size,
        min_height=min_size, clip=True), seed=None)
