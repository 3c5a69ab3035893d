"""Frame sources: one image or a folder of images, a video file, a camera.

A source yields :class:`Frame`s in order; a frame whose pixels could not be decoded arrives with
``image=None`` so the pipeline can skip and count it instead of stopping. ``fps`` and ``size``
(width, height) describe the stream when it has them (a video sink needs both).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from detectres.data.image_io import IMAGE_EXTENSIONS, ImageFileError, list_images, read_image_file

# A video that fails to decode this many frames in a row is treated as ended.
MAX_CONSECUTIVE_FAILURES = 25


class SourceError(OSError):
    """The input cannot be opened or written; the message is one line a user can act on (an ``OSError``, so
    the tools report it as every other input/output error, without knowing the demo)."""


@dataclass
class Frame:
    index: int
    image: np.ndarray | None
    name: str


class ImageFolderSource:
    """One image, or every image of a folder (sorted by name)."""

    def __init__(self, path: str):
        self.paths = list_images(path)
        self.fps = 0.0
        self.size = None

    def __iter__(self) -> Iterator[Frame]:
        for i, path in enumerate(self.paths):
            try:
                image = read_image_file(path)
            except ImageFileError:
                image = None  # counted as a skipped frame downstream
            yield Frame(i, image, os.path.basename(path))

    def close(self) -> None:
        pass


class CaptureSource:
    """Frames read with OpenCV's ``VideoCapture``; subclasses say when a failed read ends the stream."""

    def __init__(self, spec: str | int, *, name: str, cannot_open: str):
        self.cap = cv2.VideoCapture(spec)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(cannot_open)
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or 0.0
        self.frame_count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        w, h = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (w, h) if w > 0 and h > 0 else None
        self.name = name

    def ended(self, index: int) -> bool:
        """Frame ``index`` could not be grabbed: is that the end of the stream (else a bad frame)?"""
        return True

    def __iter__(self) -> Iterator[Frame]:
        index, failures = 0, 0
        while failures < MAX_CONSECUTIVE_FAILURES:
            if not self.cap.grab():
                if self.ended(index):
                    return
                failures += 1
                yield Frame(index, None, f"{self.name}_{index:06d}")
                index += 1
                continue
            ok, image = self.cap.retrieve()
            failures = 0 if ok else failures + 1
            yield Frame(index, image if ok else None, f"{self.name}_{index:06d}")
            index += 1

    def close(self) -> None:
        self.cap.release()


class VideoFileSource(CaptureSource):
    """A video file; a frame that fails to decode before the file's frame count is skipped, not the end."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(path, name=os.path.splitext(os.path.basename(path))[0],
                         cannot_open=f"cannot open video {path}: not a video file OpenCV can decode")

    def ended(self, index: int) -> bool:
        return self.frame_count <= 0 or index >= self.frame_count


class CameraSource(CaptureSource):
    """A camera by index; a failed grab means it went away."""

    def __init__(self, index: int):
        super().__init__(index, name=f"camera{index}", cannot_open=f"cannot open camera {index}")


def open_source(spec: str) -> ImageFolderSource | VideoFileSource | CameraSource:
    """``spec``: an image, a folder of images, a video file, or a camera index such as "0"."""
    text = str(spec)
    if text.isdigit():
        return CameraSource(int(text))
    if not os.path.exists(text):
        raise SourceError(f"input not found: {text}")
    if os.path.isdir(text) or text.lower().endswith(IMAGE_EXTENSIONS):
        return ImageFolderSource(text)
    return VideoFileSource(text)
