"""What the tools write for people to look at - drawn images and videos - checked, atomic, and never over
an input.

Every image goes through :func:`write_image` (encoded in memory, so a format OpenCV cannot write fails
before anything is written, then written through :func:`detectres.utils.file_io.atomic_write`); every
video through :class:`AtomicVideoWriter` (written under a temporary name and renamed when complete, its
frames counted back). A full disk or a read-only folder is one error naming the file.
"""
from __future__ import annotations

import errno
import os
from typing import Iterable

import cv2
import numpy as np

from detectres.utils.file_io import DiskFullError, atomic_write, file_mode, temp_file


def write_image(path: str, image: np.ndarray) -> str:
    """Encode ``image`` in the format ``path``'s extension names and write it atomically; returns ``path``."""
    ext = os.path.splitext(path)[1].lower() or ".jpg"
    try:
        ok, data = cv2.imencode(ext, image)
    except cv2.error as e:
        raise OSError(errno.EINVAL, f"cannot encode {path} as {ext}: {str(e).strip().splitlines()[-1]}") from None
    if not ok:
        raise OSError(errno.EINVAL, f"cannot encode {path} as {ext}")
    atomic_write(path, lambda f: f.write(data.tobytes()), binary=True, suffix=ext)
    return path


def same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def refuse_overwriting(outputs: Iterable[str], inputs: Iterable[str], key: str) -> None:
    """One :class:`ValueError` naming ``key`` if any output path is one of the inputs."""
    real_inputs = {os.path.realpath(p): p for p in inputs}
    for out in outputs:
        if os.path.realpath(out) in real_inputs:
            raise ValueError(f"{key} would write {out} over the input {real_inputs[os.path.realpath(out)]}: "
                             f"choose another {key}")


def free_bytes(path: str) -> int | None:
    try:
        stats = os.statvfs(os.path.dirname(os.path.abspath(path)))
        return stats.f_bavail * stats.f_frsize
    except (OSError, AttributeError):
        return None


class AtomicVideoWriter:
    """``cv2.VideoWriter`` into a temporary file beside ``path``; :meth:`close` checks that every frame
    is in the file and renames it into place. :meth:`abort` removes it. A killed process leaves only the
    temporary file (named ``.detectres-tmp-*``), never a broken file at ``path``."""

    def __init__(self, path: str, fourcc: str, fps: float, size: tuple[int, int]):
        self.path, self.size, self.frames = path, size, 0
        fd, self.tmp = temp_file(path, suffix=os.path.splitext(path)[1])
        os.close(fd)
        self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if not self.writer.isOpened():
            self.abort()
            raise OSError(errno.EIO, f"cannot open {path} for writing (OpenCV's video writer refused it)")

    def write(self, image: np.ndarray) -> None:
        self.writer.write(image)
        self.frames += 1

    def frames_in_file(self) -> int:
        capture = cv2.VideoCapture(self.tmp)
        try:
            return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        finally:
            capture.release()

    def close(self) -> None:
        self.writer.release()  # finalises the container
        readable = self.frames_in_file()
        if readable < self.frames:
            free = free_bytes(self.tmp)
            self.abort()
            if free is not None and free < 1 << 20:
                raise DiskFullError(errno.ENOSPC, f"no space left on device while writing {self.path}")
            raise OSError(errno.EIO, f"writing {self.path} failed: {readable} of {self.frames} frames are readable")
        os.chmod(self.tmp, file_mode())
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if hasattr(self, "writer"):
            self.writer.release()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
