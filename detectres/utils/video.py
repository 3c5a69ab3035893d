"""Frame sources (images, folders, video files, cameras) and sinks (video file, image folder, window).

A source yields ``Frame``s in order; a frame whose pixels could not be decoded arrives with
``image=None`` so the pipeline can skip and count it instead of stopping.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from detectres.data.image_io import ImageFileError, read_image_file

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
# A video that fails to decode this many frames in a row is treated as ended.
MAX_CONSECUTIVE_FAILURES = 25


class SourceError(RuntimeError):
    """The input cannot be opened; the message is one line a user can act on."""


@dataclass
class Frame:
    index: int
    image: np.ndarray | None
    name: str


def list_images(path: str, max_images: int = 0) -> list[str]:
    """``[path]`` for one image; the images of a folder sorted by name (at most ``max_images`` if > 0)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
        return files[:max_images] if max_images > 0 else files
    if not os.path.exists(path):
        raise FileNotFoundError(f"input not found: {path}")
    return [path]


class ImageSource:
    """One image or every image of a folder (sorted by name)."""

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


class VideoSource:
    """A video file or a camera (an integer index), read frame by frame with OpenCV."""

    def __init__(self, spec: str | int):
        self.is_camera = isinstance(spec, int)
        self.cap = cv2.VideoCapture(spec)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"cannot open camera {spec}" if self.is_camera else
                              f"cannot open video {spec}: not a video file OpenCV can decode")
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or 0.0
        self.frame_count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        w, h = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (w, h) if w > 0 and h > 0 else None
        self.name = f"camera{spec}" if self.is_camera else os.path.splitext(os.path.basename(str(spec)))[0]

    def __iter__(self) -> Iterator[Frame]:
        index, failures = 0, 0
        while failures < MAX_CONSECUTIVE_FAILURES:
            if not self.cap.grab():
                if self.is_camera or self.frame_count <= 0 or index >= self.frame_count:
                    return  # the end of the video (or the camera went away)
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


def open_source(spec: str) -> ImageSource | VideoSource:
    """``spec``: an image, a folder of images, a video file, or a camera index such as "0"."""
    text = str(spec)
    if text.isdigit():
        return VideoSource(int(text))
    if not os.path.exists(text):
        raise SourceError(f"input not found: {text}")
    if os.path.isdir(text) or text.lower().endswith(IMAGE_EXTENSIONS):
        return ImageSource(text)
    return VideoSource(text)


class VideoSink:
    """Writes frames to a video file with the source's fps and frame size."""

    def __init__(self, path: str, fps: float, size: tuple[int, int]):
        ext = os.path.splitext(path)[1].lower()
        if ext not in VIDEO_FOURCC:
            raise SourceError(f"cannot write video {path}: use one of {', '.join(VIDEO_FOURCC)}")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*VIDEO_FOURCC[ext]), fps if fps > 0 else 25.0,
                                      size)
        if not self.writer.isOpened():
            raise SourceError(f"cannot open {path} for writing")
        self.size = size

    def write(self, frame: Frame, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size)
        self.writer.write(image)

    def close(self) -> None:
        self.writer.release()  # finalises the container so the file stays playable


class ImageDirSink:
    """Writes each frame as ``DIR/<name>.jpg``."""

    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory

    def write(self, frame: Frame, image: np.ndarray) -> None:
        cv2.imwrite(os.path.join(self.directory, os.path.splitext(frame.name)[0] + ".jpg"), image)

    def close(self) -> None:
        pass


def display_available() -> bool:
    """A window can be shown: a display is there and OpenCV was built with a GUI backend."""
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("detectres")
        return True
    except cv2.error:
        return False


class WindowSink:
    """Shows frames in a window; ``q`` or Esc asks the pipeline to stop."""

    def __init__(self, title: str = "detectres"):
        self.title = title
        self.quit_requested = False

    def write(self, frame: Frame, image: np.ndarray) -> None:
        cv2.imshow(self.title, image)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.quit_requested = True

    def close(self) -> None:
        cv2.destroyAllWindows()
