#!/usr/bin/env python
"""Draw the evaluation plots (precision-recall, per-class AP, training curves) of finished output folders.

    python tools/plot_results.py outputs/quickstart_shapes [more folders]
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-plot")
