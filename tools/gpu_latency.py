#!/usr/bin/env python
"""Model-only inference latency, median of synchronised calls (default: R101-C4, 800 px, 300
proposals, fp16, CUDA).

    python tools/gpu_latency.py [--amp fp16|bf16|fp32] [--min-size 800] [--iters 50] [--device cuda]
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-gpu-latency")
