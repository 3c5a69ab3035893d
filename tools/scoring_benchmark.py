#!/usr/bin/env python
"""COCO scoring speed: faster-coco-eval vs pycocotools on a synthetic COCO-val-sized result set.

    python tools/scoring_benchmark.py [--images 5000] [--classes 80] [--false-per-image 82]
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-scoring-benchmark")
