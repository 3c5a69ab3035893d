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


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    class_names: list[str], score_thresh: float = 0.0) -> np.ndarray:
    """Return a copy of ``image`` (H, W, 3 BGR uint8) with boxes and "name score" tags drawn."""
    out = image.copy()
    thickness = max(1, round(min(out.shape[:2]) / 300))
    font_scale = max(0.35, min(out.shape[:2]) / 900)
    for box, score, label in sorted(zip(boxes, scores, labels), key=lambda t: t[1]):
        if score < score_thresh:
            continue
        colour = class_colour(int(label))
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        text = f"{class_names[int(label)]} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 2, ty + 1), colour, -1)
        cv2.putText(out, text, (x1 + 1, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return out
