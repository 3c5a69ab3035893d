"""Evaluation you can see: precision-recall curves, per-class AP and training curves as PNG files
(matplotlib, headless), optionally also into TensorBoard.

``write_evaluation_plots(folder)`` draws from what an evaluation left in ``folder``: ``eval.json``
(per-class AP), ``pr_curves.json`` (COCO precision at the 101 recall points, written with it by
``report.write_eval_json``), ``confusion_matrix.json`` (the confusion matrix and the precision / recall /
F1 against the score threshold) and,
for a training run, ``metrics.jsonl``. So any finished output folder can be drawn again
(``detectres-plot FOLDER`` / ``python tools/plot_results.py FOLDER``).
"""
from __future__ import annotations

import io
import json
import os

import numpy as np

from detectres.utils.file_io import atomic_write

IOU_SETTINGS = ("0.5", "0.75", "0.5:0.95")
LOSS_KEYS = ("total_loss", "loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc")


def pyplot():
    """matplotlib's pyplot on the headless Agg backend, imported on first use (0.3 s a tool start need not pay)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def class_mean(rows: list[list[float | None]]) -> np.ndarray:
    a = np.array([[np.nan if x is None else x for x in row] for row in rows], dtype=float)
    return np.nanmean(a, axis=0) if a.size and not np.isnan(a).all() else np.full(a.shape[-1], np.nan)


def plot_pr_all(curves: dict, path: str):
    fig, ax = pyplot().subplots(figsize=(6, 5))
    for iou in IOU_SETTINGS:
        ax.plot(curves["recall"], class_mean(curves["precision"][iou]), label=f"IoU {iou}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title="Precision-recall, all classes (mean over classes)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def plot_pr_extremes(curves: dict, per_class: dict, path: str, count: int = 3):
    ranked = sorted((n for n in per_class if per_class[n] is not None), key=lambda n: per_class[n])  # None: no boxes
    chosen = list(dict.fromkeys(ranked[:count] + ranked[-count:]))
    fig, ax = pyplot().subplots(figsize=(6, 5))
    for name in chosen:
        row = curves["precision"]["0.5:0.95"][curves["classes"].index(name)]
        ax.plot(curves["recall"], [np.nan if x is None else x for x in row],
                label=f"{name} (AP {per_class[name]:.1f})", linestyle="-" if name in ranked[-count:] else "--")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title="Precision-recall at IoU 0.5:0.95: best (solid) and worst (dashed) classes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_per_class_ap(per_class: dict, path: str):
    items = sorted(((n, v) for n, v in per_class.items() if v is not None), key=lambda kv: kv[1])
    fig, ax = pyplot().subplots(figsize=(7, max(2.5, 0.22 * len(items) + 1)))
    ax.barh([n for n, _ in items], [v for _, v in items], color="tab:blue")
    ax.set(xlabel="AP (IoU 0.5:0.95, %)", xlim=(0, 100), title="Per-class AP")
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)


def plot_training(metrics_path: str, path: str):
    records = [json.loads(line) for line in open(metrics_path) if line.strip()]
    steps = [r for r in records if "total_loss" in r]
    if not steps:
        return None
    fig, (loss_ax, lr_ax) = pyplot().subplots(2, 1, figsize=(7, 6), sharex=True)
    it = [r["iteration"] for r in steps]
    for key in LOSS_KEYS:
        if key in steps[0]:
            loss_ax.plot(it, [r.get(key, np.nan) for r in steps], label=key, linewidth=1)
    loss_ax.set(ylabel="loss", yscale="log", title="Training losses and learning rate")
    loss_ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=8)
    lr_ax.plot(it, [r.get("lr", np.nan) for r in steps], color="tab:red")
    lr_ax.set(xlabel="iteration", ylabel="learning rate")
    lr_ax.grid(alpha=0.3)
    return save(fig, path)


def plot_confusion(confusion: dict, path: str):
    """The confusion matrix: colour by the share of each ground-truth row, the counts written in."""
    names, matrix = confusion["classes"], np.asarray(confusion["matrix"], dtype=float)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.5, 0.45 * len(names) + 2)
    fig, ax = pyplot().subplots(figsize=(size + 1, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if len(names) <= 30:
        for (r, c), n in np.ndenumerate(matrix):
            if n:
                ax.text(c, r, f"{int(n)}", ha="center", va="center", fontsize=7,
                        color="white" if shares[r, c] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="ground truth",
           title=f"Confusion at IoU {confusion['iou']}, score >= {confusion['conf_thresh']} (row shares)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return save(fig, path)


def plot_pr_f1(thresholds: dict, path: str):
    """Precision, recall and F1 of all classes against the score threshold, the best F1 marked."""
    fig, ax = pyplot().subplots(figsize=(6, 4.5))
    for key in ("precision", "recall", "f1"):
        ax.plot(thresholds["thresholds"], thresholds[key], label=key, linewidth=2 if key == "f1" else 1)
    best = thresholds["best"]
    ax.axvline(best["threshold"], color="gray", linestyle="--", linewidth=1)
    ax.set(xlabel="score threshold", xlim=(0, 1), ylim=(0, 1.02),
           title=f"IoU 0.5: best F1 {best['f1']:.3f} at score >= {best['threshold']:.2f}")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def save(fig, path: str):
    """Render ``fig`` in memory, then write it atomically (a full disk names ``path``)."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write(path, lambda f: f.write(buffer.getvalue()), binary=True, suffix=".png")
    return fig


def write_evaluation_plots(folder: str, tensorboard=None, step: int = 0) -> list[str]:
    """Draw what ``folder`` holds into PNGs beside it (and into ``tensorboard``, a SummaryWriter, at
    ``step``): the paths written."""
    figures = {}
    per_class = read_json(os.path.join(folder, "eval.json")).get("per_class") or {}
    curves_path = os.path.join(folder, "pr_curves.json")
    if os.path.isfile(curves_path):
        curves = read_json(curves_path)
        figures["pr_curves"] = plot_pr_all(curves, os.path.join(folder, "pr_curves.png"))
        figures["pr_curves_by_class"] = plot_pr_extremes(curves, per_class, os.path.join(folder, "pr_curves_by_class.png"))
    if per_class:
        figures["per_class_ap"] = plot_per_class_ap(per_class, os.path.join(folder, "per_class_ap.png"))
    confusion_path = os.path.join(folder, "confusion_matrix.json")
    if os.path.isfile(confusion_path):
        confusion = read_json(confusion_path)
        figures["confusion_matrix"] = plot_confusion(confusion, os.path.join(folder, "confusion_matrix.png"))
        figures["pr_f1"] = plot_pr_f1(confusion["thresholds"], os.path.join(folder, "pr_f1.png"))
    metrics = os.path.join(folder, "metrics.jsonl")
    if os.path.isfile(metrics):
        figures["training_curves"] = plot_training(metrics, os.path.join(folder, "training_curves.png"))
    written = []
    for name, fig in figures.items():
        if fig is None:
            continue
        if tensorboard is not None:
            tensorboard.add_figure(f"eval/{name}", fig, step)
        pyplot().close(fig)
        written.append(os.path.join(folder, f"{name}.png"))
    return written
