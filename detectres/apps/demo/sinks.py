"""Frame sinks: a video file, a folder of images, a window. Each has ``write(frame, image)`` and ``close()``."""
from __future__ import annotations

import os

import cv2
import numpy as np

from detectres.apps.demo.sources import Frame, SourceError

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class VideoFileSink:
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


class ImageFolderSink:
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
    """Shows frames in a window; ``q`` or Esc asks the pipeline to stop (``quit_requested``)."""

    def __init__(self, title: str = "detectres"):
        self.title = title
        self.quit_requested = False

    def write(self, frame: Frame, image: np.ndarray) -> None:
        cv2.imshow(self.title, image)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.quit_requested = True

    def close(self) -> None:
        cv2.destroyAllWindows()


def open_sinks(output: str | None, display: str | bool, source) -> list:
    """The sinks the demo writes to: ``output`` (a video file by extension, else a folder) and a window
    (``display``: auto, true, false)."""
    sinks: list = []
    if output:
        if os.path.splitext(str(output))[1].lower() in VIDEO_FOURCC:
            if source.size is None:
                raise SourceError("cannot write a video from this input: it has no fixed frame size; "
                                  "give output=FOLDER")
            sinks.append(VideoFileSink(output, source.fps, source.size))
        else:
            sinks.append(ImageFolderSink(output))
    show = display_available() if display == "auto" else bool(display)
    if show:
        if not display_available():
            raise SourceError("display=true but no window can be opened (no display, or OpenCV built without "
                              "a GUI as opencv-python-headless is); use display=false with output=PATH")
        sinks.append(WindowSink())
    if not sinks:
        raise SourceError("nothing to show or write: give output=PATH (no display here)")
    return sinks
