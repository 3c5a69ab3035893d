"""The demo pipeline: a reader thread decodes ahead, the model runs, a writer thread draws and encodes.

Bounded queues keep memory flat on long videos; a single model stage keeps frames in order.
Ctrl-C or SIGTERM stops reading, lets the writer finish what it has, and closes every sink, so a
video being written stays playable.
"""
from __future__ import annotations

import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np

from detectres.utils.visualizer import draw_detections

_END = object()


@dataclass
class PipelineStats:
    read: int = 0
    processed: int = 0
    skipped: int = 0
    skipped_names: list[str] = field(default_factory=list)
    model_seconds: float = 0.0
    wall_seconds: float = 0.0
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.processed / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def model_fps(self) -> float:
        return self.processed / self.model_seconds if self.model_seconds > 0 else 0.0


def draw_overlay(image: np.ndarray, prediction: dict, class_names: list[str], score_thresh: float,
                 fps: float) -> np.ndarray:
    out = draw_detections(image, prediction["boxes"], prediction["scores"], prediction["labels"], class_names,
                          score_thresh)
    scale = max(0.4, min(out.shape[:2]) / 700)
    text = f"{fps:5.1f} FPS"
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(out, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def filter_prediction(prediction: dict, keep_labels: set[int] | None) -> dict:
    if keep_labels is None:
        return prediction
    keep = np.array([int(label) in keep_labels for label in prediction["labels"]], dtype=bool)
    return {"boxes": prediction["boxes"][keep], "scores": prediction["scores"][keep],
            "labels": prediction["labels"][keep],
            "class_names": [n for n, k in zip(prediction["class_names"], keep) if k]}


class _Interrupt:
    """Turns SIGTERM into KeyboardInterrupt while the pipeline runs (main thread only)."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def run_pipeline(frames, predict: Callable[[Any], dict], sinks: list, *, class_names: list[str],
                 prepare: Callable[[np.ndarray], Any] = lambda image: image, score_thresh: float = 0.5,
                 keep_labels: set[int] | None = None, max_frames: int = 0, queue_size: int = 8,
                 should_stop: Callable[[], bool] = lambda: False) -> PipelineStats:
    """Run ``predict(prepare(image))`` on every frame of ``frames`` (an iterable of :class:`Frame`) and
    hand the drawn frames, in order, to every sink's ``write(frame, image)``. ``prepare`` (e.g. the
    resize) runs in the reader thread, so only ``predict`` is on the model's critical path."""
    stats = PipelineStats()
    stop = threading.Event()
    read_q: queue.Queue = queue.Queue(maxsize=queue_size)
    write_q: queue.Queue = queue.Queue(maxsize=queue_size)
    errors: list[BaseException] = []

    def put(q: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader():
        try:
            for frame in frames:
                if stop.is_set() or (max_frames and stats.read >= max_frames):
                    break
                stats.read += 1
                prepared = prepare(frame.image) if frame.image is not None else None
                if not put(read_q, (frame, prepared)):
                    break
        except BaseException as e:  # surfaced in the main thread
            errors.append(e)
        finally:
            read_q.put(_END)

    def writer():
        try:
            while True:
                item = write_q.get()
                if item is _END:
                    break
                frame, prediction, fps = item
                image = draw_overlay(frame.image, prediction, class_names, score_thresh, fps)
                for sink in sinks:
                    sink.write(frame, image)
        except BaseException as e:
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=reader, daemon=True, name="reader"),
               threading.Thread(target=writer, daemon=True, name="writer")]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    fps = 0.0
    try:
        with _Interrupt():
            while not stop.is_set():
                item = read_q.get()
                if item is _END:
                    break
                frame, prepared = item
                if frame.image is None:
                    stats.skipped += 1
                    stats.skipped_names.append(frame.name)
                    continue
                m0 = time.perf_counter()
                prediction = filter_prediction(predict(prepared), keep_labels)
                now = time.perf_counter()
                stats.model_seconds += now - m0
                stats.processed += 1
                fps = stats.processed / (now - t0)
                if not put(write_q, (frame, prediction, fps)):
                    break
                if should_stop():
                    break
    except KeyboardInterrupt:
        stats.interrupted = True
    finally:
        stop.set()
        while threads[1].is_alive():
            try:
                write_q.put(_END, timeout=0.1)
                break
            except queue.Full:
                continue
        threads[1].join()
        while threads[0].is_alive():  # unblock a reader waiting on a full queue
            try:
                read_q.get(timeout=0.1)
            except queue.Empty:
                pass
        for sink in sinks:
            sink.close()
        stats.wall_seconds = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return stats
