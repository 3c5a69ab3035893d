#!/usr/bin/env python
"""List every problem in a dataset (the checks training runs at load, plus a decode of each image).

    python tools/check_data.py data=voc07 data.root=DIR
    python tools/check_data.py data=custom data.train.image_dir=D data.train.ann_file=F ... [show=-1]
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-check-data")
