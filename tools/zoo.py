#!/usr/bin/env python
"""The model zoo: list the published weights detectres loads by name, download one into the cache, print its path.

    python tools/zoo.py list
    python tools/zoo.py download faster_rcnn_R_50_FPN_3x
    python tools/zoo.py path R-50-MSRA
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-zoo")
