"""The evaluation loop: run a detector over a test loader and hand its outputs to an evaluator."""
from __future__ import annotations

import logging
import time
from typing import Iterable

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from detectres.config.builder import build
from detectres.data.datasets.base import DetectionDataset
from detectres.evaluation.confusion import confusion_report
from detectres.utils.amp import autocast_context
from detectres.utils.comm import all_gather_objects, broadcast_object, is_main_process
from detectres.utils.logfile import shows_progress_bars

logger = logging.getLogger(__name__)


def build_evaluator(data_cfg: DictConfig, dataset: DetectionDataset):
    """The evaluator ``data.evaluator`` names (a ``_partial_`` node: COCO's or VOC's) for ``dataset``."""
    return build(data_cfg.evaluator, "data.evaluator")(dataset=dataset)


def run_inference(model: torch.nn.Module, loader: Iterable, autocast: bool | str) -> tuple[list, float, int, int]:
    """(per batch: image ids and CPU detections), model seconds, images run, images skipped."""
    done: list[tuple[list[dict], list[dict]]] = []
    model_seconds, images, skipped = 0.0, 0, 0
    for batch in tqdm(loader, desc="eval", unit="img", leave=False, dynamic_ncols=True,
                      disable=not is_main_process() or not shows_progress_bars()):
        inputs = [x for x in batch if "image" in x]
        skipped += len(batch) - len(inputs)
        if not inputs:
            continue
        t0 = time.perf_counter()
        with autocast_context(model, autocast):
            outputs = model.inference(inputs)
        model_seconds += time.perf_counter() - t0
        images += len(inputs)
        done.append(([{"image_id": x["image_id"]} for x in inputs],
                     [{k: v.detach().cpu() for k, v in out.items()} for out in outputs]))
    return done, model_seconds, images, skipped


@torch.no_grad()
def evaluate_detector(model: torch.nn.Module, loader: Iterable, evaluator, output_dir: str | None = None,
                      autocast: bool | str = False, conf_thresh: float = 0.5) -> dict:
    """Run ``model.inference`` over ``loader`` and score it with ``evaluator`` (COCO or VOC).

    Under ``torch.distributed`` each rank runs its share of the data (see ``build_test_loader``);
    the outputs are gathered to rank 0, which scores them, and every rank returns the results.
    Items the dataset had to skip (an image that failed to load) are left out of the scoring and
    counted in ``skipped_images``. The results also hold ``confusion`` (the confusion matrix at IoU 0.5
    among detections scoring ``conf_thresh`` or more, and precision / recall / F1 against the score
    threshold: :mod:`detectres.evaluation.confusion`) and ``best_f1_threshold``.
    """
    was_training = model.training
    model.eval()
    try:
        parts = all_gather_objects(run_inference(model, loader, autocast))
    finally:
        model.train(was_training)
    results = None
    if is_main_process():
        for part, *_ in parts:
            for inputs, outputs in part:
                evaluator.process(inputs, outputs)
        skipped = sum(p[3] for p in parts)
        if skipped:
            logger.warning("%d image(s) failed to load and were left out of the evaluation", skipped)
        results = evaluator.evaluate(output_dir)
        results["confusion"] = confusion_report(evaluator.dataset, [io for part, *_ in parts for io in part],
                                                conf_thresh)
        results["best_f1_threshold"] = results["confusion"]["thresholds"]["best"]
        # the model alone, data loading excluded; per rank when several share the work
        results["seconds_per_image"] = sum(p[1] for p in parts) / max(1, sum(p[2] for p in parts))
        results["skipped_images"] = skipped
    return broadcast_object(results)
