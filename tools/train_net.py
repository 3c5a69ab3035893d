#!/usr/bin/env python
"""Train a detector. No arguments: the quickstart (thin ResNet-C4 on the embedded shapes).

    python tools/train_net.py [model=r50_c4] [data=coco|coco8|custom ...] [solver.max_iter=N] [resume=true]
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-train")
