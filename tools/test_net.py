#!/usr/bin/env python
"""Evaluate a detectres checkpoint (box AP), writing eval.json and the detections.

    python tools/test_net.py checkpoint=outputs/quickstart_shapes/model_final.pth [data=...] [test=paper]
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-test")
