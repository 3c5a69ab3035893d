"""The evaluation loop: run a model over a test loader and hand its outputs to an evaluator."""
from __future__ import annotations

import logging
import time
from typing import Iterable

import torch
from tqdm import tqdm

from detectres.data.datasets.base import DetectionDataset
from detectres.engine.distributed import all_gather_objects, broadcast_object, is_main_process
from detectres.evaluation.coco import COCOEvaluator

logger = logging.getLogger(__name__)


def build_evaluator(data_cfg, dataset: DetectionDataset):
    """The evaluator ``data.evaluator`` names (a ``_partial_`` node), COCO's when there is none."""
    from hydra.utils import instantiate

    node = data_cfg.get("evaluator")
    return instantiate(node)(dataset=dataset) if node is not None else COCOEvaluator(dataset)


@torch.no_grad()
def evaluate_detector(model: torch.nn.Module, loader: Iterable, evaluator, output_dir: str | None = None,
                      autocast: bool | str = False) -> dict:
    """Run ``model`` over ``loader`` and score it with ``evaluator`` (COCO or VOC).

    Under ``torch.distributed`` each rank runs its share of the data (see ``build_test_loader``);
    the outputs are gathered to rank 0, which scores them, and every rank returns the results.
    Items the dataset had to skip (an image that failed to load) are left out of the scoring and
    counted in ``skipped_images``.
    """
    from detectres.engine.amp import autocast_context

    was_training = model.training
    model.eval()
    done: list[tuple[list[dict], list[dict]]] = []
    model_seconds, images, skipped = 0.0, 0, 0
    try:
        for batch in tqdm(loader, desc="eval", unit="img", leave=False, dynamic_ncols=True,
                          disable=not is_main_process()):
            inputs = [x for x in batch if "image" in x]
            skipped += len(batch) - len(inputs)
            if not inputs:
                continue
            t0 = time.perf_counter()
            with autocast_context(model, autocast):
                outputs = model(inputs)
            model_seconds += time.perf_counter() - t0
            images += len(inputs)
            done.append(([{"image_id": x["image_id"]} for x in inputs],
                         [{k: v.detach().cpu() for k, v in out.items()} for out in outputs]))
    finally:
        model.train(was_training)
    parts = all_gather_objects((done, model_seconds, images, skipped))
    results = None
    if is_main_process():
        for part, *_ in parts:
            for inputs, outputs in part:
                evaluator.process(inputs, outputs)
        skipped = sum(p[3] for p in parts)
        if skipped:
            logger.warning("%d image(s) failed to load and were left out of the evaluation", skipped)
        results = evaluator.evaluate(output_dir)
        # the model alone, data loading excluded; per rank when several share the work
        results["seconds_per_image"] = sum(p[1] for p in parts) / max(1, sum(p[2] for p in parts))
        results["skipped_images"] = skipped
    return broadcast_object(results)
