"""Draw the evaluation plots of finished output folders again (``tools/plot_results.py``,
``detectres-plot``): precision-recall curves, per-class AP and, for a training run, its loss and LR
curves, from the ``eval.json``, ``pr_curves.json`` and ``metrics.jsonl`` each folder holds."""
from __future__ import annotations

import argparse
import os

from detectres.evaluation.plots import write_evaluation_plots


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("folders", nargs="+", help="output folders holding eval.json (a training run or test_net output)")
    a = p.parse_args(argv)
    for folder in a.folders:
        if not os.path.isfile(os.path.join(folder, "eval.json")):
            print(f"detectres: error: {folder} holds no eval.json (not a finished evaluation or training folder)")
            return 1
        for path in write_evaluation_plots(folder):
            print(f"wrote {path}")
    return 0
