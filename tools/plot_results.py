#!/usr/bin/env python
"""Draw the evaluation plots (precision-recall, per-class AP, training curves) of finished output folders.

    python tools/plot_results.py outputs/quickstart_shapes [more folders]
"""
import sys

from detectres.apps.plot import main

if __name__ == "__main__":
    sys.exit(main())
