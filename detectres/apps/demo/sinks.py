"""Frame sinks: a video file, a folder of images, a window. Each has ``write(frame, image)`` and ``close()``."""
from __future__ import annotations

import os

import cv2
import numpy as np

from detectres.apps.demo.sources import Frame, SourceError
from detectres.utils.outputs import AtomicVideoWriter, refuse_overwriting, write_image

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class VideoFileSink:
    """Writes frames to a video file with the source's fps and frame size, under a temporary name until
    :meth:`close` has checked every frame is in it (see :class:`AtomicVideoWriter`)."""

    def __init__(self, path: str, fps: float, size: tuple[int, int]):
        ext = os.path.splitext(path)[1].lower()
        if ext not in VIDEO_FOURCC:
            raise SourceError(f"cannot write video {path}: use one of {', '.join(VIDEO_FOURCC)}")
        self.path, self.size = path, size
        self.writer = AtomicVideoWriter(path, VIDEO_FOURCC[ext], fps if fps > 0 else 25.0, size)

    def write(self, frame: Frame, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size)
        self.writer.write(image)

    def close(self) -> None:
        self.writer.close()


class ImageFolderSink:
    """Writes each frame as ``DIR/<name>`` (the input's own name and format; frames of a video or camera
    as ``.jpg``), each write checked."""

    def __init__(self, directory: str):
        self.directory = directory

    def write(self, frame: Frame, image: np.ndarray) -> None:
        name = frame.name if os.path.splitext(frame.name)[1] else frame.name + ".jpg"
        write_image(os.path.join(self.directory, name), image)

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


def source_files(source) -> list[str]:
    """The files a source reads (an image folder's images, a video file)."""
    return list(getattr(source, "paths", None) or ([source.path] if getattr(source, "path", None) else []))


def planned_outputs(output: str, source) -> list[str]:
    """The files the demo will write for ``source`` into ``output`` (a video file, or a folder of frames)."""
    if os.path.splitext(output)[1].lower() in VIDEO_FOURCC:
        return [output]
    return [os.path.join(output, os.path.basename(p)) for p in getattr(source, "paths", None) or []]


def open_sinks(output: str | None, display: str | bool, source) -> list:
    """The sinks the demo writes to: ``output`` (a video file by extension, else a folder) and a window
    (``display``: auto, true, false)."""
    sinks: list = []
    if output:
        refuse_overwriting(planned_outputs(str(output), source), source_files(source), "output")
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
