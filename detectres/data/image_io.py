"""Reading image files the way a viewer shows them, with failures that say what is wrong.

Every image is returned as HxWx3 uint8 BGR: grayscale is replicated, alpha is dropped, palette
images are expanded, 16-bit images are scaled to 8 bits (value / 257, not clipped), and the EXIF
orientation is applied. Failures raise :class:`ImageFileError` whose ``kind`` is one of
``missing_image``, ``truncated_image`` or ``unreadable_image`` (the names data checks use).
"""
from __future__ import annotations

import os
from typing import Callable

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from detectres.config.paths import not_installed_hint

# EXIF orientations that swap width and height (90 / 270 degree rotations, with or without mirroring).
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION_TAG = 274
_JPEG_END = b"\xff\xd9"
_PNG_END = b"IEND\xaeB`\x82"


class ImageFileError(OSError):
    """An image file that cannot be used. ``kind`` names the problem, ``path`` the file."""

    def __init__(self, kind: str, path: str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.kind = kind
        self.path = path
        self.detail = detail


def truncation(head: bytes, tail: bytes, whole: Callable[[], bytes]) -> str | None:
    """Why a JPEG or PNG whose first and last bytes are ``head``/``tail`` ends early, or None.

    A JPEG ends with the EOI marker (FF D9) and a PNG with its IEND chunk; a file cut short lacks
    them. Some writers append data after them (padding, a phone's motion-photo video), so when the
    last bytes lack the marker the ``whole`` file is searched before calling it truncated.
    """
    for magic, end, what in ((b"\xff\xd8", _JPEG_END, "JPEG: the end-of-image marker"),
                             (b"\x89PNG", _PNG_END, "PNG: the IEND chunk")):
        if head.startswith(magic) and end not in tail and end not in whole():
            return f"truncated {what} is missing (the file was cut short)"
    return None


def read_image_file(path: str) -> np.ndarray:
    """Decode ``path`` to HxWx3 uint8 BGR (see the module notes); raises :class:`ImageFileError`."""
    if not os.path.isfile(path):
        raise ImageFileError("missing_image", path, "image file not found")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ImageFileError("unreadable_image", path, "the file is empty (0 bytes)")
    reason = truncation(data[:8].tobytes(), data[-64:].tobytes(), data.tobytes)
    if reason:
        raise ImageFileError("truncated_image", path, reason)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # applies EXIF orientation, converts depth and channels
    if image is None:
        raise ImageFileError("unreadable_image", path, "cannot decode: the file is corrupt or not an image")
    return image


def image_file_size(path: str) -> tuple[int, int]:
    """(height, width) as :func:`read_image_file` would return it, from the file header only
    (EXIF orientation applied). Raises :class:`ImageFileError` for missing, truncated or
    unidentifiable files; a file whose pixel data is corrupt is only found by decoding it."""
    if not os.path.isfile(path):
        raise ImageFileError("missing_image", path, "image file not found")
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(max(0, os.path.getsize(path) - 64))
        tail = f.read()

    def whole() -> bytes:
        with open(path, "rb") as f:
            return f.read()

    reason = truncation(head, tail, whole)
    if reason:
        raise ImageFileError("truncated_image", path, reason)
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageFileError("unreadable_image", path, f"not a readable image ({e})") from e
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return height, width


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(path: str, max_images: int = 0) -> list[str]:
    """``[path]`` for one image; the images of a folder sorted by name (at most ``max_images`` if > 0)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
        return files[:max_images] if max_images > 0 else files
    if not os.path.exists(path):
        raise FileNotFoundError(f"input not found: {path}{not_installed_hint(path)}")
    return [path]
