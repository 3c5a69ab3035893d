"""Checking and cleaning COCO-style records (``images``, ``annotations``, ``categories``).

COCO files are read into this form directly and VOC XML files are converted into it, so both
formats get the same checks. Records may carry a ``source`` string (a VOC XML file and object
number) that messages use instead of the annotation id. Boxes are ``[x, y, width, height]`` in
pixels; problems are recorded in a :class:`DataReport` and handled by its policies.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, fields
from itertools import chain
from operator import attrgetter
from typing import Any

import numpy as np

from detectres.data.checks import FIX, SKIP, DataCheckError, DataReport
from detectres.data.image_io import ImageFileError, image_file_size

_NUMBER = (int, float)
OUTSIDE_TOLERANCE = 1.0  # px a box may overshoot the image before it is reported (it is clipped either way)


def check_categories(categories: Any, source: str) -> list[dict]:
    """The category list, sorted by id; a missing, empty or ambiguous list cannot be repaired."""
    if not isinstance(categories, list) or not categories:
        raise DataCheckError(f"{source}: 'categories' must be a non-empty list")
    for c in categories:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise DataCheckError(f"{source}: category {c!r} needs an integer 'id' and a string 'name'")
    dupes = [i for i, n in Counter(c["id"] for c in categories).items() if n > 1]
    if dupes:
        raise DataCheckError(f"{source}: category ids {dupes} appear more than once")
    return sorted(categories, key=lambda c: c["id"])


def _image_where(source: str, image: dict) -> str:
    return image.get("source") or f"{source}: image id {image.get('id')} ({image.get('file_name')})"


def fits_int64(value: int) -> bool:
    """Whether an integer id fits the int64 columns the checked records keep."""
    return -2**63 <= value < 2**63


def _positive_number(value: Any) -> bool:
    return type(value) in _NUMBER and math.isfinite(value) and value > 0  # type(): bools are not sizes


def clean_images(images: Any, *, source: str, image_root: str, report: DataReport) -> tuple[list[dict], set]:
    """Image entries with an id, a file name and a positive size; returns (kept, every id seen)."""
    if not isinstance(images, list):
        raise DataCheckError(f"{source}: 'images' must be a list")
    usable, seen = [], set()
    for image in images:
        def where(image=image) -> str:  # made only for a message (118k entries, few messages)
            return _image_where(source, image) if isinstance(image, dict) else f"{source}: image entry {image!r}"
        if isinstance(image, dict) and isinstance(image.get("id"), int):
            seen.add(image["id"])  # its annotations go with it, not reported as orphans
        if not isinstance(image, dict) or not isinstance(image.get("id"), int) or not fits_int64(image["id"]) \
                or not image.get("file_name"):
            report.add("bad_image_entry", where(), "needs an integer 'id' (64-bit) and a 'file_name'", can_fix=False)
            continue
        if image.get("malformed"):
            report.add("malformed_file", where(), image["malformed"])
            continue
        if image.get("file_problem"):  # the reader already looked at the file (YOLO: for its size) and failed
            kind, detail = image["file_problem"]
            report.add(kind, where(), detail)
            continue
        if not (_positive_number(image.get("width")) and _positive_number(image.get("height"))):
            detail = f"width/height {image.get('width')!r}x{image.get('height')!r} is not a positive size"
            if report.add("bad_image_entry", where(), detail) != FIX:
                continue
            try:
                image["height"], image["width"] = image_file_size(os.path.join(image_root, image["file_name"]))
            except ImageFileError as e:
                report.add(e.kind, where(), e.detail)
                continue
        usable.append(image)
    duplicates = set()
    for key, what in (("id", "image id"), ("file_name", "file")):
        counts = Counter(im[key] for im in usable)
        for value in (v for v, n in counts.items() if n > 1):
            entries = [im for im in usable if im[key] == value]
            listed = ", ".join(str(im["file_name"] if key == "id" else im["id"]) for im in entries)
            report.add("duplicate_image_id", f"{source}: {what} {value}",
                       f"is used by {len(entries)} entries ({'files' if key == 'id' else 'ids'} {listed})")
            duplicates.update(id(im) for im in entries)
    kept = [im for im in usable if id(im) not in duplicates]
    return kept, seen


def xywh_to_xyxy(bbox: list[float]) -> list[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def check_box(bbox: Any, width: float, height: float) -> tuple[str | None, str, list[float] | None]:
    """(kind, detail, box) for an ``[x, y, w, h]`` box in a ``width`` x ``height`` image.

    kind None: the box is fine and ``box`` is it, clipped when it overshoots the image by at most
    1 px. Otherwise ``kind`` names the problem and ``box`` is the repair (clipped) or None.
    """
    try:
        x, y, w, h = bbox
    except (TypeError, ValueError):
        x = None
    if not (type(x) in _NUMBER and type(y) in _NUMBER and type(w) in _NUMBER and type(h) in _NUMBER  # no bools
            and math.isfinite(x + y + w + h) and type(bbox) in (list, tuple)):
        return "malformed_box", f"bbox {bbox!r} is not four finite numbers [x, y, width, height]", None
    if w <= 0 or h <= 0:
        return "nonpositive_box", f"bbox {list(bbox)} has zero or negative width/height", None
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    clipped = [x1, y1, x2 - x1, y2 - y1] if x2 > x1 and y2 > y1 else None
    t = OUTSIDE_TOLERANCE
    if clipped is None or x < -t or y < -t or x + w > width + t or y + h > height + t:
        how = "partly" if clipped else "wholly"
        return "box_outside_image", f"bbox {list(bbox)} lies {how} outside the {width:g}x{height:g} image", clipped
    return None, "", clipped


def annotation_where(ann: dict, image: dict | None, source: str) -> str:
    """How messages name an annotation: its ``source`` (VOC: the XML file and object) or the file and ids."""
    if ann.get("source"):
        return ann["source"]
    in_image = f", {image['file_name']}" if image else ""
    return f"{source}: annotation id {ann.get('id')} (image id {ann.get('image_id')}{in_image})"


def annotation_problem(ann: dict, image: dict, category_ids: set) -> tuple[str | None, str, list[float] | None]:
    """:func:`check_box`'s answer, after checking the category."""
    if ann.get("category_id") not in category_ids:
        name = ann.get("category_name")
        what = f"category {name!r}" if name is not None else f"category_id {ann.get('category_id')!r}"
        return "unknown_category", f"{what} is not in the class list", None
    return check_box(ann.get("bbox"), image["width"], image["height"])


@dataclass
class BoxTable:
    """Annotations as columns, one row a box in file order: ``boxes`` are ``[x, y, w, h]`` (float64);
    ``difficult`` is None unless the records carry that flag (VOC)."""
    ids: np.ndarray
    image_ids: np.ndarray
    category_ids: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    iscrowd: np.ndarray
    difficult: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def xyxy(self) -> np.ndarray:
        """(N, 4) ``[x1, y1, x2, y2]`` of the ``[x, y, w, h]`` boxes (float64)."""
        return np.concatenate([self.boxes[:, :2], self.boxes[:, :2] + self.boxes[:, 2:]], axis=1).reshape(-1, 4)

    def take(self, rows: np.ndarray) -> "BoxTable":
        """The rows ``rows`` (indices or a boolean mask), in that order."""
        return BoxTable(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[rows]
                           for f in fields(self)})

    def to_dicts(self) -> list[dict]:
        """COCO annotation dicts (what pycocotools and the evaluators read)."""
        out = [{"id": i, "image_id": m, "category_id": c, "bbox": b, "area": a, "iscrowd": z}
               for i, m, c, b, a, z in zip(self.ids.tolist(), self.image_ids.tolist(), self.category_ids.tolist(),
                                           self.boxes.tolist(), self.areas.tolist(), self.iscrowd.tolist())]
        if self.difficult is not None:
            for ann, d in zip(out, self.difficult.tolist()):
                ann["difficult"] = d
        return out


ANNOTATION_FIELDS = ("id", "image_id", "category_id", "bbox", "iscrowd", "area", "difficult")


def annotation_columns(annotations: list) -> tuple[dict[str, list], list[bool]]:
    """Each field of :data:`ANNOTATION_FIELDS` as a list (None where absent), and which rows are objects.
    Rows are dicts or typed records with those attributes (the fast JSON reader's)."""
    if annotations and not isinstance(annotations[0], dict) and hasattr(type(annotations[0]), "__struct_fields__"):
        present = type(annotations[0]).__struct_fields__
        return ({k: list(map(attrgetter(k), annotations)) if k in present else [None] * len(annotations)
                 for k in ANNOTATION_FIELDS}, [True] * len(annotations))
    objects = [isinstance(a, dict) for a in annotations]
    rows = [a if ok else {} for a, ok in zip(annotations, objects)]
    return {k: [a.get(k) for a in rows] for k in ANNOTATION_FIELDS}, objects


def row_dict(annotation: Any) -> Any:
    """A row as the dict the per-entry checks read (typed records: their present fields)."""
    if isinstance(annotation, dict) or not hasattr(type(annotation), "__struct_fields__"):
        return annotation
    return {k: getattr(annotation, k) for k in type(annotation).__struct_fields__ if getattr(annotation, k) is not None}


def lookup(table: dict, values: list, default: Any) -> list:
    """``table.get(v, default)`` for each value (an unhashable value gets ``default``)."""
    try:
        return [table.get(v, default) for v in values]
    except TypeError:
        return [table.get(v, default) if getattr(v, "__hash__", None) else default for v in values]


def numeric_boxes(bboxes: list) -> tuple[np.ndarray, np.ndarray]:
    """((N, 4) float64 with zeros where unusable, (N,) whether the row is four int/float numbers)."""
    shaped = [type(b) in (list, tuple) and len(b) == 4 for b in bboxes]
    rows = [b for b, ok in zip(bboxes, shaped) if ok]
    if not set(map(type, chain.from_iterable(rows))) <= {int, float}:  # bools, strings, ...: row by row
        typed = iter([all(type(v) in _NUMBER for v in b) for b in rows])
        shaped = [ok and next(typed) for ok in shaped]
        rows = [b for b, ok in zip(bboxes, shaped) if ok]
    ok = np.array(shaped, bool)
    out = np.zeros((len(bboxes), 4))
    try:
        out[ok] = np.fromiter(chain.from_iterable(rows), np.float64, count=4 * len(rows)).reshape(-1, 4)
    except OverflowError:  # an integer past float64: row by row (the per-entry check names it)
        fits = [all(abs(v) < 1e308 for v in b) for b in rows]
        ok[np.flatnonzero(ok)[~np.array(fits, bool)]] = False
        out[ok] = np.array([b for b, f in zip(rows, fits) if f], np.float64).reshape(-1, 4)
    return out, ok


def clipped_boxes(boxes: np.ndarray, width: np.ndarray, height: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`check_box` for every row at once: (the boxes clipped to their images, whether the row is fine)."""
    x, y, w, h = boxes.T
    t = OUTSIDE_TOLERANCE
    with np.errstate(invalid="ignore", over="ignore"):
        x1, y1 = np.minimum(np.maximum(x, 0.0), width), np.minimum(np.maximum(y, 0.0), height)
        x2, y2 = np.minimum(np.maximum(x + w, 0.0), width), np.minimum(np.maximum(y + h, 0.0), height)
        fine = (np.isfinite(x + y + w + h) & (w > 0) & (h > 0) & (x2 > x1) & (y2 > y1) & (x >= -t) & (y >= -t)
                & (x + w <= width + t) & (y + h <= height + t))
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1), fine


def clean_annotations(annotations: Any, images: list[dict], seen_image_ids: set, category_ids: set, *,
                      source: str, report: DataReport) -> tuple[BoxTable, set]:
    """The annotations that point at a kept image, a known category and a valid box (repaired where
    the policy says ``fix``), as a :class:`BoxTable`; returns (that table, ids of images to skip).

    The rows are checked all at once; the few that are not fine go through the per-entry checks
    (:func:`annotation_problem`), which name the problem and apply its policy."""
    if not isinstance(annotations, list):
        raise DataCheckError(f"{source}: 'annotations' must be a list")
    cols, objects = annotation_columns(annotations)
    image_row = np.array(lookup({im["id"]: i for i, im in enumerate(images)}, cols["image_id"], -1), np.int64)
    boxes, typed = numeric_boxes(cols["bbox"])
    width = np.array([float(im["width"]) for im in images] + [1.0])[image_row]  # row -1: a placeholder
    height = np.array([float(im["height"]) for im in images] + [1.0])[image_row]
    clipped, fine = clipped_boxes(boxes, width, height)
    fine &= typed & (image_row >= 0) & np.array(objects, bool) & np.array(lookup(dict.fromkeys(category_ids, True),
                                                                                 cols["category_id"], False), bool)
    keep, skip_images = fine.copy(), set()
    for i in np.flatnonzero(~fine).tolist():
        box = flagged_annotation(row_dict(annotations[i]), images, int(image_row[i]), seen_image_ids, category_ids,
                                 source=source, report=report, skip_images=skip_images)
        if box is not None:
            keep[i], clipped[i] = True, box
    ids, unique = unique_ids(np.flatnonzero(keep), cols["id"], annotations, images, image_row, source, report)
    rows = np.flatnonzero(keep)[unique]
    return BoxTable(ids=ids[unique], image_ids=np.array([images[r]["id"] for r in image_row[rows].tolist()], np.int64),
                    category_ids=np.array([cols["category_id"][r] for r in rows.tolist()], np.int64),
                    boxes=clipped[rows], areas=areas_of(rows, cols["area"], clipped),
                    iscrowd=np.array([1 if cols["iscrowd"][r] else 0 for r in rows.tolist()], np.int64),
                    difficult=None if all(v is None for v in cols["difficult"]) else
                    np.array([1 if cols["difficult"][r] else 0 for r in rows.tolist()], np.int64)), skip_images


def flagged_annotation(ann: Any, images: list[dict], image_row: int, seen_image_ids: set, category_ids: set, *,
                       source: str, report: DataReport, skip_images: set) -> list[float] | None:
    """One annotation that is not fine: its problem reported; returns the box to keep (the repair) or None."""
    if not isinstance(ann, dict):
        report.add("malformed_box", f"{source}: annotation {ann!r}", "is not an object")  # nothing to keep
        return None
    if image_row < 0:
        if not isinstance(ann.get("image_id"), Hashable) or ann.get("image_id") not in seen_image_ids:
            report.add("orphan_annotation", annotation_where(ann, None, source),
                       f"image id {ann.get('image_id')!r} has no image entry")  # else it goes with its skipped image
        return None
    image = images[image_row]
    kind, detail, box = annotation_problem(ann, image, category_ids)
    if kind is None:
        return box
    action = report.add(kind, annotation_where(ann, image, source), detail, can_fix=box is not None)
    if action == SKIP:
        skip_images.add(image["id"])
    return box if action == FIX else None


def unique_ids(rows: np.ndarray, ids: list, annotations: list, images: list[dict], image_row: np.ndarray,
               source: str, report: DataReport) -> tuple[np.ndarray, np.ndarray]:
    """(the ids of ``rows``, which rows stay): a later duplicate (or a missing id) is given a new id where
    the policy says ``fix``, else dropped."""
    values = [ids[r] for r in rows.tolist()]
    if set(map(type, values)) <= {int} and fits_int64(min(values, default=0)) and fits_int64(max(values, default=0)):
        array = np.array(values, np.int64)
        ordered = np.sort(array)
        if not (ordered[1:] == ordered[:-1]).any():  # the usual case: every id an integer, none repeated
            return array, np.ones(len(array), bool)
    next_id = 1 + max((v for v in ids if type(v) is int and fits_int64(v + 1)), default=0)
    out, used, stays = [], set(), []
    for r, value in zip(rows.tolist(), values):
        if type(value) is not int or value in used or not fits_int64(value):
            ann = row_dict(annotations[r])
            detail = ("has no integer id" if type(value) is not int else f"id {value} is used twice" if value in used
                      else f"id {value} does not fit in 64 bits")
            if report.add("duplicate_annotation_id", annotation_where(ann, images[image_row[r]], source), detail) != FIX:
                out.append(0)
                stays.append(False)
                continue
            value, next_id = next_id, next_id + 1
        used.add(value)
        out.append(value)
        stays.append(True)
    return np.array(out, np.int64), np.array(stays, bool)


def areas_of(rows: np.ndarray, areas: list, boxes: np.ndarray) -> np.ndarray:
    """The annotated area where it is a number, else the kept box's."""
    given = [areas[r] for r in rows.tolist()]
    if not set(map(type, given)) <= {int, float}:
        given = [a if type(a) in _NUMBER else np.nan for a in given]
    try:
        given = np.fromiter(given, np.float64, count=len(given))
    except OverflowError:  # an integer past float64 is no area: the box's
        given = np.array([a if abs(a) < 1e308 else np.nan for a in given], np.float64)
    return np.where(np.isnan(given), boxes[rows, 2] * boxes[rows, 3], given)


@dataclass
class Records:
    """Checked records: image entries (dicts with ``id``, ``file_name``, ``width``, ``height``), the boxes as a
    :class:`BoxTable` and the categories sorted by id."""
    images: list[dict]
    boxes: BoxTable
    categories: list[dict]

    def without_images(self, image_ids: set) -> "Records":
        """These records without the images ``image_ids`` and their boxes."""
        if not image_ids:
            return self
        keep = ~np.isin(self.boxes.image_ids, np.fromiter(image_ids, np.int64))
        return Records(images=[im for im in self.images if im["id"] not in image_ids],
                       boxes=self.boxes if keep.all() else self.boxes.take(keep), categories=self.categories)


def clean_records(records: Any, *, source: str, image_root: str, report: DataReport) -> Records:
    """Checked COCO-style records: every problem recorded in ``report`` and handled by its policy.

    Raises :class:`DataCheckError` when the structure itself is unusable (no category list, ...).
    """
    if not isinstance(records, dict):
        raise DataCheckError(f"{source}: expected a JSON object with 'images', 'annotations' and 'categories'")
    categories = check_categories(records.get("categories"), source)
    images, seen = clean_images(records.get("images"), source=source, image_root=image_root, report=report)
    boxes, skip = clean_annotations(records.get("annotations", []), images, seen, {c["id"] for c in categories},
                                    source=source, report=report)
    boxes = boxes.take(np.argsort(boxes.image_ids, kind="stable"))  # each image's boxes together, in file order
    return Records(images=images, boxes=boxes, categories=categories).without_images(skip)
