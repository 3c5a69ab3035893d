#!/usr/bin/env python
"""Deployment benchmark: R50-FPN and R101-C4 at 800 px, eager vs ONNX Runtime vs OpenVINO fp32/bf16/INT8.

    python tools/deploy_benchmark.py [--models r50_fpn,r101_c4] [--rounds 3]
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-deploy-benchmark")
