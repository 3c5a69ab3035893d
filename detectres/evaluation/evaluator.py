"""The evaluation loop: run a model over a test loader and hand its outputs to an evaluator."""
from __future__ import annotations

import logging
import time
from typing import Iterable

import torch
from tqdm import tqdm

from detectres.data.datasets.base import DetectionDataset
from detectres.evaluation.coco import COCOEvaluator

logger = logging.getLogger(__name__)


def build_evaluator(data_cfg, dataset: DetectionDataset):
    """The evaluator ``data.evaluator`` names (a ``_partial_`` node), COCO's when there is none."""
    from hydra.utils import instantiate

    node = data_cfg.get("evaluator")
    return instantiate(node)(dataset=dataset) if node is not None else COCOEvaluator(dataset)


@torch.no_grad()
def evaluate_detector(model: torch.nn.Module, loader: Iterable, evaluator, output_dir: str | None = None,
                      autocast: bool = False) -> dict:
    """Run ``model`` over ``loader`` and score it with ``evaluator`` (COCO or VOC).

    Items the dataset had to skip (an image that failed to load) are left out of the scoring and
    counted in ``skipped_images``.
    """
    from detectres.engine.amp import autocast_context

    was_training = model.training
    model.eval()
    model_seconds, images, skipped = 0.0, 0, 0
    try:
        for batch in tqdm(loader, desc="eval", unit="img", leave=False, dynamic_ncols=True):
            inputs = [x for x in batch if "image" in x]
            skipped += len(batch) - len(inputs)
            if not inputs:
                continue
            t0 = time.perf_counter()
            with autocast_context(model, autocast):
                outputs = model(inputs)
            model_seconds += time.perf_counter() - t0
            images += len(inputs)
            evaluator.process(inputs, outputs)
    finally:
        model.train(was_training)
    if skipped:
        logger.warning("%d image(s) failed to load and were left out of the evaluation", skipped)
    results = evaluator.evaluate(output_dir)
    results["seconds_per_image"] = model_seconds / max(1, images)  # the model alone, data loading excluded
    results["skipped_images"] = skipped
    return results
