#!/usr/bin/env python
"""Run a detector on an image or a folder and write images with the detections drawn.

    python tools/predict.py checkpoint=outputs/quickstart_shapes/model_final.pth [source=IMG|DIR]
"""
from detectres.apps.cli import run_tool
from detectres.apps.predict import predict

if __name__ == "__main__":
    run_tool("predict", predict)
