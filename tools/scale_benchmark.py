#!/usr/bin/env python
"""Loading COCO-sized data: time to the first training iteration and peak memory at 10k / 50k / 118k images.

    python tools/scale_benchmark.py [--images 10000 50000 118287] [--nproc 1] [--root DIR] [--keep-cache]
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-scale-benchmark")
