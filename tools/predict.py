#!/usr/bin/env python
"""Run a detector on an image or a folder and write images with the detections drawn.

    python tools/predict.py checkpoint=outputs/quickstart_shapes/model_final.pth [source=IMG|DIR]
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-predict")
