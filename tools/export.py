#!/usr/bin/env python
"""Export a checkpoint's detector to TorchScript and ONNX (dynamic image size; see export.json).

    python tools/export.py outputs/quickstart_shapes/model_final.pth exported/ [--formats torchscript,onnx]
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-export")
