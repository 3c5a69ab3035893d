"""Data structures shared by the whole toolkit: boxes and batched images."""
from detectres.structures.boxes import (
    box_area,
    clip_boxes,
    nonempty_mask,
    pairwise_iou,
    scale_boxes,
)
from detectres.structures.image_list import ImageList

__all__ = ["ImageList", "box_area", "clip_boxes", "nonempty_mask", "pairwise_iou", "scale_boxes"]
