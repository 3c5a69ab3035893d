"""Convert a dataset between COCO, PASCAL VOC and YOLO (``tools/convert_data.py``, ``detectres-convert-data``).

    python tools/convert_data.py SRC DST from=coco|voc|yolo to=coco|voc|yolo [images=link|copy|symlink]
                                 [classes=a,b,c] [decimals=6]

SRC is read through its dataset class, so the data checks run on it (their summary is printed); DST must
be new or empty. ``images=link`` (the default) hard-links each image, copying where the file systems
differ; the summary says how many were linked, copied or re-encoded. ``classes`` gives a VOC source's class
list in order (default: the 20 PASCAL VOC classes). ``decimals`` is how many places YOLO coordinates get
(6, as Ultralytics writes, keeps boxes within 0.5 px; 10 keeps them within 1e-7 px). See :mod:`detectres.data.convert` for the layouts.
"""
from __future__ import annotations

import sys

from detectres.apps.cli import USER_ERRORS, fail
from detectres.data.convert import convert_dataset

KEYS = ("from", "to", "images", "classes", "decimals")


def parse(argv: list[str]) -> tuple[str, str, dict[str, str]]:
    """SRC, DST and the key=value options; a wrong or missing one is a ValueError naming it."""
    positional = [a for a in argv if "=" not in a]
    options = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = sorted(set(options) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]}=...: the options are {', '.join(k + '=' for k in KEYS)}")
    if len(positional) != 2 or "from" not in options or "to" not in options:
        raise ValueError("usage: convert_data.py SRC DST from=coco|voc|yolo to=coco|voc|yolo "
                         "[images=link|copy|symlink] [classes=a,b,c] [decimals=6]")
    return positional[0], positional[1], options


def main(argv: list[str] | None = None) -> int:
    try:
        src, dst, options = parse(sys.argv[1:] if argv is None else argv)
        classes = options["classes"].split(",") if options.get("classes") else None
        decimals = options.get("decimals", "6")
        if not decimals.isdigit():
            raise ValueError(f"decimals={decimals}: an integer from 1 to 12")
        report = convert_dataset(src, dst, source_format=options["from"], target_format=options["to"],
                                 images=options.get("images", "link"), class_names=classes, decimals=int(decimals),
                                 progress=print)
    except USER_ERRORS as e:
        fail(e)
    for line in report.lines():
        print(line)
    print(f"wrote {options['to']} to {dst}")
    return 0
