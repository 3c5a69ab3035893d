#!/usr/bin/env python
"""List every problem in a dataset (the checks training runs at load, plus a decode of each image).

    python tools/check_data.py data=voc07 data.root=DIR
    python tools/check_data.py data=custom data.train.image_dir=D data.train.ann_file=F ... [show=-1]
"""
from detectres.apps.check_data import check_data
from detectres.apps.cli import run_tool

if __name__ == "__main__":
    run_tool("check_data", check_data)
