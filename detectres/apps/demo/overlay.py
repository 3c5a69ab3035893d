"""What the demo does to each frame's detections: keeps the classes asked for (:class:`ModelStage`,
:func:`filter_prediction`) and draws them with the running FPS (:class:`Overlay`). The threads and queues
that carry frames through these are :mod:`detectres.apps.demo.pipeline`."""
from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np

from detectres.utils.visualizer import draw_detections


class Overlay:
    """Draws the detections at or above ``score_thresh`` and the running FPS on a frame."""

    def __init__(self, class_names: list[str], score_thresh: float = 0.5):
        self.class_names = class_names
        self.score_thresh = score_thresh

    def __call__(self, image: np.ndarray, prediction: dict, fps: float) -> np.ndarray:
        out = draw_detections(image, prediction["boxes"], prediction["scores"], prediction["labels"],
                              self.class_names, self.score_thresh)
        scale = max(0.4, min(out.shape[:2]) / 700)
        text = f"{fps:5.1f} FPS"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(out, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
        cv2.putText(out, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
        return out


def filter_prediction(prediction: dict, keep_labels: set[int] | None) -> dict:
    """Only the detections whose label is in ``keep_labels`` (all when None)."""
    if keep_labels is None:
        return prediction
    keep = np.array([int(label) in keep_labels for label in prediction["labels"]], dtype=bool)
    return {"boxes": prediction["boxes"][keep], "scores": prediction["scores"][keep],
            "labels": prediction["labels"][keep],
            "class_names": [n for n, k in zip(prediction["class_names"], keep) if k]}


class ModelStage:
    """Runs ``predict`` on each prepared frame (in the calling thread) and keeps ``keep_labels`` only."""

    def __init__(self, predict: Callable[[Any], dict], keep_labels: set[int] | None = None):
        self.predict = predict
        self.keep_labels = keep_labels

    def __call__(self, prepared: Any) -> dict:
        return filter_prediction(self.predict(prepared), self.keep_labels)
