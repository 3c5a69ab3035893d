"""Draw detections on BGR images with OpenCV."""
from __future__ import annotations

import colorsys

import cv2
import numpy as np


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct, stable BGR colour per class (golden-ratio hue steps)."""
    h = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray | None, labels: np.ndarray,
                    class_names: list[str], score_thresh: float = 0.0) -> np.ndarray:
    """Return a copy of ``image`` (H, W, 3 BGR uint8) with boxes and "name score" tags drawn (``scores``
    None: ground truth, "name" tags)."""
    out = image.copy()
    thickness = max(1, round(min(out.shape[:2]) / 300))
    font_scale = max(0.35, min(out.shape[:2]) / 900)
    scores_or_none = [None] * len(labels) if scores is None else list(scores)
    for box, score, label in sorted(zip(boxes, scores_or_none, labels), key=lambda t: -1 if t[1] is None else t[1]):
        if score is not None and score < score_thresh:
            continue
        colour = class_colour(int(label))
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        text = class_names[int(label)] if score is None else f"{class_names[int(label)]} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 2, ty + 1), colour, -1)
        cv2.putText(out, text, (x1 + 1, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return out


def mosaic(images: list[np.ndarray], tile: int = 256, gap: int = 4) -> np.ndarray:
    """The images (H, W, 3 BGR) in a near-square grid of ``tile`` x ``tile`` cells on grey, each at its own
    size (larger ones scaled down to fit), with its H x W written under it: sizes stay comparable."""
    tile = min(tile, max((max(im.shape[:2]) for im in images), default=tile))
    columns = max(1, int(np.ceil(np.sqrt(len(images)))))
    rows = max(1, int(np.ceil(len(images) / columns)))
    cell = tile + 14  # the caption's line
    out = np.full((rows * (cell + gap) + gap, columns * (tile + gap) + gap, 3), 40, np.uint8)
    for i, image in enumerate(images):
        scale = min(1.0, tile / max(image.shape[:2]))
        h, w = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
        y, x = gap + (i // columns) * (cell + gap), gap + (i % columns) * (tile + gap)
        out[y:y + h, x:x + w] = image if scale == 1 else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        cv2.putText(out, f"{image.shape[0]}x{image.shape[1]}", (x, y + tile + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (220, 220, 220), 1, cv2.LINE_AA)
    return out
