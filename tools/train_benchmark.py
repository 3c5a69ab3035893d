#!/usr/bin/env python
"""Training step time and peak GPU memory per precision (default: R101-C4, 800 px, batch 2).

    python tools/train_benchmark.py [model=r101_c4] [min_size=800] [batch=2] [modes=[fp32,bf16,fp16]]
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-train-benchmark")
