#!/usr/bin/env python
"""Seconds per training iteration and per inference image: detectres R50-C4 vs torchvision's parts.

    python tools/benchmark.py [min_size=480] [rounds=3]

Ends with `train ratio detectres/torchvision: X.XX` and `inference ratio detectres/torchvision: X.XX`.
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-benchmark")
