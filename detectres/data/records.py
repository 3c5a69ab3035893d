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
from typing import Any

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


def _positive_number(value: Any) -> bool:
    return type(value) in _NUMBER and math.isfinite(value) and value > 0  # type(): bools are not sizes


def clean_images(images: Any, *, source: str, image_root: str, report: DataReport) -> tuple[list[dict], set]:
    """Image entries with an id, a file name and a positive size; returns (kept, every id seen)."""
    if not isinstance(images, list):
        raise DataCheckError(f"{source}: 'images' must be a list")
    usable, seen = [], set()
    for image in images:
        where = _image_where(source, image) if isinstance(image, dict) else f"{source}: image entry {image!r}"
        if isinstance(image, dict) and isinstance(image.get("id"), int):
            seen.add(image["id"])  # its annotations go with it, not reported as orphans
        if not isinstance(image, dict) or not isinstance(image.get("id"), int) or not image.get("file_name"):
            report.add("bad_image_entry", where, "needs an integer 'id' and a 'file_name'", can_fix=False)
            continue
        if image.get("malformed"):
            report.add("malformed_file", where, image["malformed"])
            continue
        if not (_positive_number(image.get("width")) and _positive_number(image.get("height"))):
            detail = f"width/height {image.get('width')!r}x{image.get('height')!r} is not a positive size"
            if report.add("bad_image_entry", where, detail) != FIX:
                continue
            try:
                image["height"], image["width"] = image_file_size(os.path.join(image_root, image["file_name"]))
            except ImageFileError as e:
                report.add(e.kind, where, e.detail)
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


def clean_annotations(annotations: Any, images: list[dict], seen_image_ids: set, category_ids: set, *,
                      source: str, report: DataReport) -> tuple[list[dict], set]:
    """Annotations (repaired in place where the policy says ``fix``) that point at a kept image, a
    known category and a valid box; returns (kept, ids of images to skip)."""
    if not isinstance(annotations, list):
        raise DataCheckError(f"{source}: 'annotations' must be a list")
    by_id = {im["id"]: im for im in images}
    kept, skip_images, used_ids = [], set(), set()
    next_id = 1 + max([a["id"] for a in annotations if isinstance(a, dict) and type(a.get("id")) is int], default=0)
    for ann in annotations:
        if not isinstance(ann, dict):
            report.add("malformed_box", f"{source}: annotation {ann!r}", "is not an object")  # nothing to keep
            continue
        image = by_id.get(ann.get("image_id"))
        if image is None:
            if ann.get("image_id") not in seen_image_ids:  # else it goes with its skipped image
                report.add("orphan_annotation", annotation_where(ann, None, source),
                           f"image id {ann.get('image_id')!r} has no image entry")
            continue
        kind, detail, box = annotation_problem(ann, image, category_ids)
        if kind:
            action = report.add(kind, annotation_where(ann, image, source), detail, can_fix=box is not None)
            if action == SKIP:
                skip_images.add(image["id"])
            if action != FIX:
                continue
        ann["bbox"] = box
        if type(ann.get("id")) is not int or ann["id"] in used_ids:
            detail = f"id {ann['id']} is used twice" if type(ann.get("id")) is int else "has no integer id"
            if report.add("duplicate_annotation_id", annotation_where(ann, image, source), detail) != FIX:
                continue
            ann["id"], next_id = next_id, next_id + 1
        used_ids.add(ann["id"])
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", box[2] * box[3])
        kept.append(ann)
    return kept, skip_images


def clean_records(records: Any, *, source: str, image_root: str, report: DataReport) -> dict:
    """Checked COCO-style records (entries repaired in place): every problem recorded in ``report``
    and handled by its policy.

    Raises :class:`DataCheckError` when the structure itself is unusable (no category list, ...).
    """
    if not isinstance(records, dict):
        raise DataCheckError(f"{source}: expected a JSON object with 'images', 'annotations' and 'categories'")
    categories = check_categories(records.get("categories"), source)
    images, seen = clean_images(records.get("images"), source=source, image_root=image_root, report=report)
    annotations, skip = clean_annotations(records.get("annotations", []), images, seen,
                                          {c["id"] for c in categories}, source=source, report=report)
    return drop_images(dict(records, images=images, annotations=annotations, categories=categories), skip)


def drop_images(records: dict, image_ids: set) -> dict:
    """``records`` without the images ``image_ids`` and their annotations."""
    if not image_ids:
        return records
    return dict(records, images=[im for im in records["images"] if im["id"] not in image_ids],
                annotations=[a for a in records["annotations"] if a["image_id"] not in image_ids])
