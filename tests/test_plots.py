"""Evaluation you can see: every evaluation writes its plots beside eval.json (training runs add their
loss and LR curves), as real images, and any finished folder can be drawn again."""
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np

from detectres.apps.evaluate import evaluate
from detectres.config import PROJECT_ROOT, compose_config

PLOTS = ("pr_curves.png", "pr_curves_by_class.png", "per_class_ap.png")


def assert_real_image(path):
    assert os.path.getsize(path) > 5000, path
    image = cv2.imread(path)
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 300, path
    assert image.std() > 10, f"{path} is blank"  # lines, bars and text, not an empty canvas


def test_training_run_writes_evaluation_and_training_plots(tiny_trained):
    for name in (*PLOTS, "training_curves.png", "pr_curves.json"):
        assert os.path.isfile(os.path.join(tiny_trained, name)), name
    for name in (*PLOTS, "training_curves.png"):
        assert_real_image(os.path.join(tiny_trained, name))
    events = [f for f in os.listdir(tiny_trained) if f.startswith("events.out.tfevents")]
    assert events and max(os.path.getsize(os.path.join(tiny_trained, f)) for f in events) > 20000  # figures too


def test_test_net_writes_plots_and_a_finished_folder_is_drawn_again(tiny_trained, tmp_path):
    out = tmp_path / "eval"
    evaluate(compose_config("eval", [f"checkpoint={os.path.join(tiny_trained, 'model_final.pth')}",
                                     f"runtime.output_dir={out}", "vis_images=0", "runtime.num_threads=1"]))
    for name in PLOTS:
        assert_real_image(str(out / name))
    assert not (out / "training_curves.png").exists()  # no metrics.jsonl in an evaluation folder
    copy = tmp_path / "copy"
    shutil.copytree(tiny_trained, copy)
    for name in (*PLOTS, "training_curves.png"):
        os.remove(copy / name)
    res = subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / "plot_results.py"), str(copy)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for name in (*PLOTS, "training_curves.png"):
        assert_real_image(str(copy / name))
    bad = subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / "plot_results.py"), str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "holds no eval.json" in bad.stdout
