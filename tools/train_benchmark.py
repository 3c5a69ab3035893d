#!/usr/bin/env python
"""Training step time and peak GPU memory per precision (default: R101-C4, 800 px, batch 2).

    python tools/train_benchmark.py [model=r101_c4] [min_size=800] [batch=2] [modes=[fp32,bf16,fp16]]
"""
from detectres.apps.cli import run_tool
from detectres.apps.train_benchmark import main as run_train_benchmark

if __name__ == "__main__":
    run_tool("train_benchmark", run_train_benchmark)
