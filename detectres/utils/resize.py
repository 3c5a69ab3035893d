"""Detectron2's shortest-edge resize rule and the resize itself, on HxWxC numpy images.

Shared by the data transforms, the test-time procedures and the predictor, so all three resize an
image to the same size with the same pixels.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

INTERPOLATIONS = ("bilinear", "pil_bilinear")


def resize_image(image: np.ndarray, out_hw: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize an HxWxC uint8 image to ``out_hw``.

    "bilinear" is OpenCV's INTER_LINEAR (fast); "pil_bilinear" is PIL's bilinear, bit-exact with
    Detectron2's test-time resize (the two differ by at most 1 grey level).
    """
    if image.shape[:2] == tuple(out_hw):
        return image
    if interpolation == "pil_bilinear":
        return np.asarray(Image.fromarray(image).resize((out_hw[1], out_hw[0]), Image.BILINEAR))
    if interpolation == "bilinear":
        return cv2.resize(image, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
    raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {INTERPOLATIONS}")


def shortest_edge_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """Detectron2's ResizeShortestEdge rule: scale the short side to ``short`` unless the long side
    would pass ``max_size``; new size = int(x * scale + 0.5)."""
    scale = short / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_shortest_edge(image: np.ndarray, short: int, max_size: int, interpolation: str = "bilinear") -> np.ndarray:
    """Resize an HxWxC image by :func:`shortest_edge_size` (the test-time resize outside a dataset)."""
    return resize_image(image, shortest_edge_size(image.shape[0], image.shape[1], short, max_size), interpolation)
