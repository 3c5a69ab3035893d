"""What the tools run: training, evaluation and drawing from a composed config."""
from __future__ import annotations

import inspect
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
from detectres.data.build import build_dataset, build_datasets
from detectres.data.loader import SkippedImageCounter, build_test_loader, build_train_loader
from detectres.engine.amp import grad_scaler
from detectres.engine.checkpoint import Checkpointer
from detectres.engine.distributed import (get_rank, get_world_size, init_distributed, is_main_process,
                                          shutdown_distributed)
from detectres.engine.hooks import LRScheduler, PeriodicCheckpointer, PeriodicEval, ProgressLogger
from detectres.engine.solver import build_solver
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


def configure_determinism(deterministic: bool) -> None:
    """Deterministic kernels where PyTorch has them (a warning names any op that has none)."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def wrap_distributed(model: torch.nn.Module, sync_bn: bool) -> torch.nn.Module:
    """DistributedDataParallel (with SyncBatchNorm for trainable BN when asked); the model itself when
    there is one process. Each rank keeps its own BN running statistics, as in Detectron2."""
    if get_world_size() == 1:
        return model
    on_gpu = next(model.parameters()).device.type == "cuda"
    if sync_bn:
        if not on_gpu:
            raise ValueError("sync_bn=true needs GPUs (PyTorch's SyncBatchNorm runs on CUDA only); on CPUs use "
                             "model.backbone.norm=FrozenBN or GN")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = torch.nn.parallel.DistributedDataParallel
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
                      else {"broadcast_buffers": False})
    return ddp(model, device_ids=[torch.cuda.current_device()] if on_gpu else None, **no_buffer_sync)


def train_from_config(cfg: DictConfig) -> dict:
    """Train, evaluate at the end (and every ``solver.eval_period``), draw a few val images.

    Under ``torchrun`` every rank runs this; rank 0 alone writes checkpoints, metrics and images.
    Returns the final evaluation results (percent).
    """
    rank, world = init_distributed(cfg.get("dist_timeout_s", 1800), device=cfg.device)
    try:
        return train_process(cfg, rank, world)
    finally:
        shutdown_distributed()


def train_process(cfg: DictConfig, rank: int, world: int) -> dict:
    if rank > 0:
        logging.getLogger().setLevel(logging.WARNING)  # one copy of the log
    configure_determinism(cfg.get("deterministic", False))
    seed_everything(cfg.seed + rank)
    device = resolve_device(cfg.device)
    threads = set_threads(cfg.num_threads, cfg.data.num_workers)
    train_set, val_set = build_datasets(cfg)
    class_names = train_set.class_names
    model = build_model(cfg.model, num_classes=len(class_names)).to(device)
    if cfg.model.weights:
        load_model_weights(model, cfg.model.weights, strict=cfg.get("strict_weights", True))
    s = cfg.solver
    optimizer, scheduler = build_solver(model, s)
    scaler = grad_scaler(cfg.amp, torch.device(device).type)
    checkpointer = Checkpointer(cfg.output_dir, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                extra={"config": checkpoint_config(cfg), "class_names": class_names})
    start_iter = checkpointer.resume() if cfg.resume else 0
    if start_iter:
        logger.info("resuming from %s at iteration %d", checkpointer.last_checkpoint(), start_iter)
    train_loader = build_train_loader(train_set, batch_size=s.ims_per_batch, num_workers=cfg.data.num_workers,
                                      seed=cfg.seed, rank=rank, world_size=world, start_iter=start_iter)
    val_loader = build_test_loader(val_set, num_workers=cfg.data.num_workers, rank=rank, world_size=world)
    writer = MetricsWriter(cfg.output_dir, enabled=rank == 0)

    def run_eval() -> dict:
        results = evaluate_detector(model, val_loader, build_evaluator(cfg.data, val_set),
                                    os.path.join(cfg.output_dir, "inference"), autocast=cfg.amp)
        if rank == 0:
            write_eval_json(results, os.path.join(cfg.output_dir, "eval.json"))
            print_summary(results)
        return results

    evaluator = PeriodicEval(run_eval, s.eval_period, writer)
    hooks = [LRScheduler(scheduler), PeriodicCheckpointer(checkpointer, s.checkpoint_period), evaluator]
    if rank == 0:
        hooks.append(ProgressLogger(writer, period=cfg.log_period))
    logger.info("training on %s (%d threads%s) for %d iterations, %d images per batch; output in %s", device,
                threads, f", {world} processes" if world > 1 else "", s.max_iter, s.ims_per_batch, cfg.output_dir)
    batches = SkippedImageCounter(train_loader)
    trainer = Trainer(model=wrap_distributed(model, cfg.get("sync_bn", False)), optimizer=optimizer,
                      data_loader=batches, max_iter=s.max_iter, hooks=hooks, amp=cfg.amp,
                      clip_grad_norm=s.clip_grad_norm, max_nonfinite_steps=s.get("max_nonfinite_steps", 0),
                      scaler=scaler)
    try:
        trainer.train(start_iter)
    finally:
        writer.close()
        batches.report()
    if cfg.vis_images and rank == 0:
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
        if "image" not in item:  # failed to load (already reported)
            continue
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
    own_keys = ("checkpoint", "output_dir", "device", "num_threads", "amp", "vis_images", "test", "ensemble",
                "dist_timeout_s")
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
    with the test-time procedure ``test=baseline|refine|multiscale|tta|paper``. Under ``torchrun``
    each rank evaluates its share and rank 0 scores and writes."""
    init_distributed(cfg.get("dist_timeout_s", 1800), device=cfg.device)
    try:
        return evaluate_process(cfg, overrides)
    finally:
        shutdown_distributed()


def evaluate_process(cfg: DictConfig, overrides: list[str]) -> dict:
    cfg, weights, source = load_for_eval(cfg, overrides)
    output_dir = cfg.output_dir or os.path.join(os.path.dirname(os.path.abspath(source)), "eval")
    device = resolve_device(cfg.device)
    set_threads(cfg.num_threads, cfg.data.num_workers)
    # test-time procedures pick their own sizes from the original images; ensembles take resized ones
    ensemble = bool(cfg.get("ensemble"))
    dataset = build_dataset(cfg, "val", resize=ensemble)
    class_names = weights.class_names or dataset.class_names
    if list(class_names) != list(dataset.class_names):
        raise ValueError(f"{source} was trained on classes {class_names} but {dataset.name} "
                         f"lists {dataset.class_names}")
    model = build_eval_model(cfg, weights, source, len(class_names), device)
    loader = build_test_loader(dataset, num_workers=cfg.data.num_workers, rank=get_rank(), world_size=get_world_size())
    results = evaluate_detector(model, loader, build_evaluator(cfg.data, dataset), output_dir, autocast=cfg.amp)
    if not is_main_process():
        return results
    write_eval_json(results, os.path.join(output_dir, "eval.json"))
    print_summary(results)
    print(f"{results['seconds_per_image']:.4f} s/image; wrote {os.path.join(output_dir, 'eval.json')} and the "
          f"detections beside it")
    if cfg.vis_images:
        draw_dataset_predictions(model, dataset, os.path.join(output_dir, "vis"), cfg.vis_images)
    return results
