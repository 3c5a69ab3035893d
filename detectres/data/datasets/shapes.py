"""The embedded default dataset: synthetic shapes written as a COCO-format folder on first use.

Images hold filled circles, rectangles and triangles (some outlined, some rotated) over a
textured background, with occlusion. Nothing is downloaded; the same seed gives the same files.
Layout: ROOT/{train,val}/*.png and ROOT/annotations/instances_{train,val}.json.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
from typing import Annotated

import cv2
import numpy as np

from detectres.config.constraints import Range

logger = logging.getLogger(__name__)

CLASSES = ("circle", "rectangle", "triangle")
# Every generated image states its licence in its own COCO metadata (``licenses`` + each image's ``license``):
# the images are drawn by this code, and the project dedicates them to the public domain.
LICENCE = {"id": 1, "name": "CC0 1.0 Universal (drawn by detectres' shapes generator)",
           "url": "https://creativecommons.org/publicdomain/zero/1.0/"}
SAMPLES = {"num_train": 4, "num_val": 4, "size": 192, "seed": 8}  # tests/data/shapes8, shipped in the wheel
MAX_IMAGES = 100_000  # per split: ~0.5 GB of 192 px PNGs
VERSION = 1  # bump when the generator changes, so cached copies are rebuilt


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth two-colour gradient with low-frequency blobs and pixel noise."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None] + 1.5) / 3.0
    img = c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]
    blobs = cv2.resize(rng.normal(0, 25, (6, 6, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    img = img + blobs + rng.normal(0, 8, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    """A colour at least 80 away (L2 in BGR) from the local background, so every shape is visible."""
    for _ in range(20):
        colour = rng.integers(0, 256, 3)
        if np.linalg.norm(colour - background) > 80:
            break
    return tuple(int(c) for c in colour)


def _draw_shape(rng, img, cls: str, cx: int, cy: int, s: int, colour, thickness: int) -> list[float]:
    """Draw one shape of nominal size ``s`` centred at (cx, cy); returns its tight XYXY box."""
    if cls == "circle":
        r = s // 2
        cv2.circle(img, (cx, cy), r, colour, thickness, cv2.LINE_AA)
        pts = np.array([[cx - r, cy - r], [cx + r, cy + r]])
    elif cls == "rectangle":
        aspect = rng.uniform(0.5, 2.0)
        w, h = s * np.sqrt(aspect), s / np.sqrt(aspect)
        pts = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy + h / 2]]).round().astype(np.int32)
        cv2.rectangle(img, tuple(int(v) for v in pts[0]), tuple(int(v) for v in pts[1]), colour, thickness,
                      cv2.LINE_AA)
    else:
        theta = rng.uniform(0, 2 * np.pi) + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([cx + s / 2 * np.cos(theta), cy + s / 2 * np.sin(theta)], axis=1).round().astype(np.int32)
        if thickness < 0:
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
        else:
            cv2.polylines(img, [pts], True, colour, thickness, cv2.LINE_AA)
    x1, y1 = pts.min(axis=0)
    x2, y2 = pts.max(axis=0)
    return [float(x1), float(y1), float(x2), float(y2)]


def draw_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    img = _background(rng, size)
    objects: list[tuple[int, list[float]]] = []
    for _ in range(int(rng.integers(1, 6))):
        cls = int(rng.integers(0, len(CLASSES)))
        s = int(rng.integers(size // 10, size // 3))
        cx, cy = (int(v) for v in rng.integers(s // 2 + 1, size - s // 2 - 1, 2))
        colour = _contrasting_colour(rng, img[cy, cx].astype(np.float64))
        thickness = -1 if rng.random() < 0.8 else int(rng.integers(2, 5))
        box = _draw_shape(rng, img, CLASSES[cls], cx, cy, s, colour, thickness)
        objects.append((cls, [max(0.0, box[0]), max(0.0, box[1]), min(size, box[2]), min(size, box[3])]))
    return img, _visible(objects)


def _visible(objects: list[tuple[int, list[float]]]) -> list[tuple[int, list[float]]]:
    """Drop shapes more than 60% covered by the boxes of shapes drawn after them."""
    keep = []
    for i, (cls, (x1, y1, x2, y2)) in enumerate(objects):
        area = max(1e-6, (x2 - x1) * (y2 - y1))
        covered = 0.0
        for _, (a1, b1, a2, b2) in objects[i + 1:]:
            iw = max(0.0, min(x2, a2) - max(x1, a1))
            ih = max(0.0, min(y2, b2) - max(y1, b1))
            covered = max(covered, iw * ih / area)
        if covered < 0.6:
            keep.append((cls, [x1, y1, x2, y2]))
    return keep


def write_split(root: str, split: str, count: int, size: int, seed: int) -> None:
    rng = np.random.default_rng([seed, {"train": 0, "val": 1}[split]])
    os.makedirs(os.path.join(root, split), exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        img, objects = draw_image(rng, size)
        name = f"{i:06d}.png"
        cv2.imwrite(os.path.join(root, split, name), img)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size, "license": LICENCE["id"]})
        for cls, (x1, y1, x2, y2) in objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": cls + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
            })
    categories = [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(CLASSES)]
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump({"info": {"description": f"detectres synthetic shapes ({split}, seed {seed})"},
                   "licenses": [LICENCE], "images": images, "annotations": annotations, "categories": categories}, f)


def generated_spec(root: str) -> dict | None:
    """What :func:`ensure_shapes_dataset` wrote in ``root`` (its ``DONE.json``), or None."""
    try:
        with open(os.path.join(root, "DONE.json")) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return None
    return spec if isinstance(spec, dict) and "version" in spec else None


TEMP_PREFIX, OWNER = ".shapes-", "OWNER.json"


def abandoned(folder: str) -> bool:
    """A temporary build folder whose writer is gone: its process (on this host) no longer runs, or, with no
    owner recorded (a build killed before it wrote one, or by an older detectres), untouched for an hour."""
    try:
        with open(os.path.join(folder, OWNER)) as f:
            owner = json.load(f)
    except (OSError, ValueError):
        return time.time() - os.path.getmtime(folder) > 3600
    if owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, TypeError, ValueError):
        return False
    return False


def remove_abandoned_builds(parent: str) -> None:
    """Delete the temporary folders of builds that were killed (SIGKILL leaves them behind)."""
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if name.startswith(TEMP_PREFIX) and os.path.isdir(path) and abandoned(path):
            shutil.rmtree(path, ignore_errors=True)
            logger.info("removed %s, left by a dataset build that was killed", path)


def ensure_shapes_dataset(root: str, *, num_train: Annotated[int, Range(1, MAX_IMAGES)] = 800,
                          num_val: Annotated[int, Range(1, MAX_IMAGES)] = 100, size: Annotated[int, Range(64, 2048)] = 192,
                          seed: int = 0) -> str:
    """Generate the dataset under ``root`` unless an identical one is already there; returns ``root``.

    Written to a temporary folder and renamed into place, so an interrupted run never leaves a
    half-written dataset behind. It replaces only a dataset it wrote itself (another size or seed) or
    an empty folder: any other existing ``root`` is refused, never deleted.
    """
    root = os.path.expanduser(root)
    spec = {"version": VERSION, "train": num_train, "val": num_val, "size": size, "seed": seed}
    existing = generated_spec(root)
    if existing == spec:
        return root
    if existing is None and os.path.exists(root) and (not os.path.isdir(root) or os.listdir(root)):
        raise FileExistsError(f"{root} exists and is not a shapes dataset written by detectres (no DONE.json): "
                              "not replacing it; choose another data.root")
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    remove_abandoned_builds(parent)
    tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent)
    try:
        with open(os.path.join(tmp, OWNER), "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
        write_split(tmp, "train", num_train, size, seed)
        write_split(tmp, "val", num_val, size, seed)
        with open(os.path.join(tmp, "DONE.json"), "w") as f:
            json.dump(spec, f)
        os.remove(os.path.join(tmp, OWNER))
        if os.path.exists(root):
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def write_samples(root: str) -> str:
    """The sample set the wheel ships (``tests/data/shapes8``): 4 train + 4 val generated images, so every
    shipped image is one this project drew (``THIRD_PARTY.md``); a test holds the files to this function."""
    return ensure_shapes_dataset(root, **SAMPLES)
