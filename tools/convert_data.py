#!/usr/bin/env python
"""Convert a dataset between COCO, PASCAL VOC and YOLO.

    python tools/convert_data.py SRC DST from=coco|voc|yolo to=coco|voc|yolo [images=link|copy|symlink]
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-convert-data")
