"""What the tools run: training, evaluation and drawing from a composed config."""
from __future__ import annotations

import json
import logging
import math
import os
import random

import cv2
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from detectres.config import build_model, checkpoint_config, resolve_device, set_threads
from detectres.data.build import build_dataset, build_loaders
from detectres.data.loader import SkippedImageCounter, build_test_loader, build_train_loader
from detectres.engine.checkpoint import Checkpointer
from detectres.engine.hooks import LRScheduler, PeriodicCheckpointer, PeriodicEval, ProgressLogger
from detectres.engine.solver import WarmupMultiStepLR, build_optimizer
from detectres.engine.trainer import Trainer
from detectres.evaluation.evaluator import build_evaluator, evaluate_detector
from detectres.modeling.ensemble import EnsembleDetector
from detectres.utils.events import MetricsWriter
from detectres.utils.visualizer import draw_detections
from detectres.weights import load_model_weights, load_weights_into, read_weights

logger = logging.getLogger("detectres")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_eval_json(results: dict, path: str) -> None:
    """Numbers in percent; undefined ones (e.g. APl with no large objects) become null, not NaN."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return None if isinstance(v, float) and math.isnan(v) else v

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(clean(results), f, indent=2)


def print_summary(results: dict) -> None:
    keys = [k for k in ("AP", "AP50", "AP75", "APs", "APm", "APl") if k in results]
    print("bbox | " + " | ".join(f"{k:>6}" for k in keys))
    print("     | " + " | ".join(f"{results[k]:6.2f}" for k in keys))


def train_from_config(cfg: DictConfig) -> dict:
    """Train, evaluate at the end (and every ``solver.eval_period``), draw a few val images.

    Returns the final evaluation results (percent).
    """
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    threads = set_threads(cfg.num_threads, cfg.data.num_workers)
    train_set, val_set, train_loader, val_loader = build_loaders(cfg)
    class_names = train_set.class_names
    model = build_model(cfg.model, num_classes=len(class_names)).to(device)
    if cfg.model.weights:
        load_model_weights(model, cfg.model.weights, strict=cfg.get("strict_weights", True))
    s = cfg.solver
    optimizer = build_optimizer(model, base_lr=s.base_lr, momentum=s.momentum, weight_decay=s.weight_decay,
                                weight_decay_norm=s.weight_decay_norm, nesterov=s.nesterov)
    scheduler = WarmupMultiStepLR(optimizer, steps=list(s.steps), gamma=s.gamma, warmup_iters=s.warmup_iters,
                                  warmup_factor=s.warmup_factor)
    checkpointer = Checkpointer(cfg.output_dir, model=model, optimizer=optimizer, scheduler=scheduler,
                                extra={"config": checkpoint_config(cfg), "class_names": class_names})
    start_iter = checkpointer.resume() if cfg.resume else 0
    if start_iter:
        logger.info("resuming from %s at iteration %d", checkpointer.last_checkpoint(), start_iter)
        # a fresh data order after a resume, not a replay of the first batches
        train_loader = build_train_loader(train_set, batch_size=s.ims_per_batch, num_workers=cfg.data.num_workers,
                                          seed=cfg.seed + start_iter)
    writer = MetricsWriter(cfg.output_dir)

    def run_eval() -> dict:
        results = evaluate_detector(model, val_loader, build_evaluator(cfg.data, val_set),
                                    os.path.join(cfg.output_dir, "inference"), autocast=cfg.amp)
        write_eval_json(results, os.path.join(cfg.output_dir, "eval.json"))
        print_summary(results)
        return results

    evaluator = PeriodicEval(run_eval, s.eval_period, writer)
    hooks = [LRScheduler(scheduler), PeriodicCheckpointer(checkpointer, s.checkpoint_period), evaluator,
             ProgressLogger(writer, period=cfg.log_period)]
    logger.info("training on %s (%d threads) for %d iterations, %d images per batch; output in %s",
                device, threads, s.max_iter, s.ims_per_batch, cfg.output_dir)
    batches = SkippedImageCounter(train_loader)
    trainer = Trainer(model=model, optimizer=optimizer, data_loader=batches, max_iter=s.max_iter,
                      hooks=hooks, amp=cfg.amp, clip_grad_norm=s.clip_grad_norm)
    try:
        trainer.train(start_iter)
    finally:
        writer.close()
        if batches.messages:
            logger.warning("%d image(s) failed to load during training and were skipped:\n  %s",
                           len(batches.messages), "\n  ".join(batches.messages))
    if cfg.vis_images:
        draw_dataset_predictions(model, val_set, os.path.join(cfg.output_dir, "vis"), cfg.vis_images)
    return evaluator.last_results or {}


@torch.no_grad()
def draw_dataset_predictions(model, dataset, out_dir: str, count: int, score_thresh: float = 0.5) -> list[str]:
    """Draw the model's detections on the first ``count`` images of ``dataset`` into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    model.eval()
    paths = []
    for i in range(min(count, len(dataset))):
        item = dataset[i]
        out = model([item])[0]
        image = cv2.imread(item["file_name"], cv2.IMREAD_COLOR)
        drawn = draw_detections(image, out["pred_boxes"].cpu().numpy(), out["scores"].cpu().numpy(),
                                out["pred_classes"].cpu().numpy(), dataset.class_names, score_thresh)
        path = os.path.join(out_dir, os.path.splitext(os.path.basename(item["file_name"]))[0] + ".jpg")
        cv2.imwrite(path, drawn)
        paths.append(path)
    print(f"drew detections (score >= {score_thresh}) on {len(paths)} images in {out_dir}")
    return paths


def config_from_checkpoint(cfg: DictConfig, overrides: list[str], weights) -> DictConfig:
    """The checkpoint's own config with the command-line ``overrides`` carried over from ``cfg``."""
    from detectres.config import reapply_overrides

    if not weights.config:
        raise ValueError(f"{cfg.checkpoint} carries no config: pass model=NAME model.weights={cfg.checkpoint} "
                         "instead of checkpoint=")
    own_keys = ("checkpoint", "output_dir", "device", "num_threads", "amp", "vis_images", "test", "ensemble")
    merged = reapply_overrides(OmegaConf.create(weights.config), cfg, overrides, skip=own_keys)
    for key in own_keys:
        OmegaConf.update(merged, key, cfg.get(key), force_add=True)
    return merged


def load_for_eval(cfg: DictConfig, overrides: list[str]):
    """(config, weights, source) for ``checkpoint=PATH`` (its own config is the base) or ``model.weights``."""
    if cfg.checkpoint:
        weights = read_weights(cfg.checkpoint)
        return config_from_checkpoint(cfg, overrides, weights), weights, cfg.checkpoint
    if cfg.model.get("weights"):
        return cfg, read_weights(cfg.model.weights), cfg.model.weights
    raise ValueError("nothing to evaluate: pass checkpoint=PATH (a detectres checkpoint) or "
                     "model=NAME model.weights=PATH")


def build_eval_model(cfg: DictConfig, weights, source: str, num_classes: int, device: str):
    """The detector, wrapped in the configured test-time procedure or in an ensemble."""
    model = build_model(cfg.model, num_classes=num_classes)
    load_weights_into(model, weights, source=source)
    model.to(device)
    if cfg.get("ensemble"):
        if any(cfg.test.get(k) for k in ("refine", "multiscale", "tta")):
            raise ValueError("ensemble= works with test=baseline only")
        members = [model]
        for path in cfg.ensemble:
            w = read_weights(path)
            member = build_model(OmegaConf.create(w.config).model if w.config else cfg.model, num_classes=num_classes)
            load_weights_into(member, w, source=path)
            members.append(member.to(device))
        return EnsembleDetector(members)
    return instantiate(cfg.test)(model=model, min_size=cfg.input.min_size_test, max_size=cfg.input.max_size_test,
                                 interpolation=cfg.input.get("interpolation", "bilinear"))


def evaluate_from_config(cfg: DictConfig, overrides: list[str]) -> dict:
    """Evaluate ``checkpoint=PATH`` (a detectres checkpoint: its config is the base) or
    ``model.weights=PATH`` (any supported format, with the composed config) on the val set,
    with the test-time procedure ``test=baseline|refine|multiscale|tta|paper``."""
    cfg, weights, source = load_for_eval(cfg, overrides)
    output_dir = cfg.output_dir or os.path.join(os.path.dirname(os.path.abspath(source)), "eval")
    device = resolve_device(cfg.device)
    set_threads(cfg.num_threads, cfg.data.num_workers)
    # test-time procedures pick their own sizes from the original images; ensembles take resized ones
    ensemble = bool(cfg.get("ensemble"))
    dataset = build_dataset(cfg, "val", resize=ensemble)
    class_names = weights.class_names or dataset.class_names
    if list(class_names) != list(dataset.class_names):
        raise ValueError(f"{source} was trained on classes {class_names} but {cfg.data.val.ann_file} "
                         f"lists {dataset.class_names}")
    model = build_eval_model(cfg, weights, source, len(class_names), device)
    loader = build_test_loader(dataset, num_workers=cfg.data.num_workers)
    results = evaluate_detector(model, loader, build_evaluator(cfg.data, dataset), output_dir, autocast=cfg.amp)
    write_eval_json(results, os.path.join(output_dir, "eval.json"))
    print_summary(results)
    print(f"{results['seconds_per_image']:.4f} s/image; wrote {os.path.join(output_dir, 'eval.json')} "
          "and coco_instances_results.json")
    if cfg.vis_images:
        draw_dataset_predictions(model, dataset, os.path.join(output_dir, "vis"), cfg.vis_images)
    return results
