#!/usr/bin/env python
"""Convert torchvision / MSRA / Detectron2 weights into a detectres checkpoint.

    python tools/convert_weights.py SRC DST --format {torchvision,msra,detectron2} [--model r101_c4]

Backbone files (torchvision, msra) load with `model.weights=DST` to train from ImageNet; Detectron2
detector files also carry their config and class names (`tools/test_net.py checkpoint=DST`).
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-convert")
