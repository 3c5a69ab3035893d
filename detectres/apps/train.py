"""The training application (``tools/train_net.py``): datasets, model, solver and hooks, then the loop;
it evaluates (every ``solver.eval_period`` and at the end) and draws a few validation images.

Under ``torchrun`` every rank runs this; rank 0 alone writes checkpoints, metrics and images.
"""
from __future__ import annotations

import logging
import os
import re

from omegaconf import DictConfig, OmegaConf

from detectres.config import build, checkpoint_config
from detectres.data.build import build_datasets
from detectres.data.loader import SkippedImageCounter, build_test_loader, build_train_loader
from detectres.engine.checkpoint import Checkpointer
from detectres.engine.hooks import LRScheduler, PeriodicCheckpointer, PeriodicEval, ProgressLogger
from detectres.engine.memory import check_batch_memory, smallest_image_pixels
from detectres.engine.trainer import Trainer, wrap_distributed
from detectres.evaluation.evaluator import build_evaluator, evaluate_detector
from detectres.evaluation.plots import write_evaluation_plots
from detectres.evaluation.report import draw_dataset_predictions, print_summary, write_eval_json
from detectres.utils.amp import describe_cpu, grad_scaler, precision_name
from detectres.utils.comm import init_distributed, shutdown_distributed
from detectres.utils.env import configure_determinism, seed_everything, set_threads
from detectres.utils.events import MetricsWriter
from detectres.utils.file_io import atomic_write_text
from detectres.utils.run_lock import RankZeroLock
from detectres.weights.restore import restore_model

logger = logging.getLogger("detectres")


def train(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Train as ``cfg`` says, holding ``runtime.output_dir`` for this run; returns the final evaluation
    results (percent)."""
    rank, world = init_distributed(cfg.runtime.dist_timeout_s, device=cfg.runtime.device)
    try:
        with RankZeroLock(cfg.runtime.output_dir):
            check_output_folder(cfg)
            return train_process(cfg, rank, world)
    finally:
        shutdown_distributed()


CHECKPOINT_NAME = re.compile(r"model_(final|\d{7})\.pth")


def check_output_folder(cfg: DictConfig) -> None:
    """Refuse, before any work, to write over the starting weights or, without ``resume=true`` or
    ``overwrite=true``, over another run's checkpoints."""
    out = os.path.realpath(cfg.runtime.output_dir)
    weights = cfg.model.weights
    if weights and os.path.dirname(os.path.realpath(weights)) == out and CHECKPOINT_NAME.fullmatch(os.path.basename(weights)):
        raise ValueError(f"model.weights={weights} is a checkpoint name in runtime.output_dir={cfg.runtime.output_dir}, "
                         "which this run would overwrite: train into another runtime.output_dir")
    if cfg.resume or cfg.overwrite:
        return
    for marker, what, verb in (("model_final.pth", "a finished run", "replace it"),
                               ("last_checkpoint", "an interrupted run", "start over")):
        if os.path.exists(os.path.join(out, marker)):
            raise ValueError(f"runtime.output_dir={cfg.runtime.output_dir} holds {what} ({marker}): pass resume=true "
                             f"to continue it, overwrite=true to {verb}, or choose another runtime.output_dir")


def evaluation_hook(cfg: DictConfig, model, val_set, rank: int, world: int, writer: MetricsWriter) -> PeriodicEval:
    """Evaluation on the validation split every ``solver.eval_period`` iterations and at the end;
    rank 0 writes ``eval.json`` and prints the summary."""
    out = cfg.runtime.output_dir
    loader = build_test_loader(val_set, num_workers=cfg.data.num_workers, rank=rank, world_size=world,
                               device=model.device)

    def run_eval(iteration: int) -> dict:
        results = evaluate_detector(model, loader, build_evaluator(cfg.data, val_set.records), os.path.join(out, "inference"),
                                    autocast=cfg.runtime.amp, conf_thresh=cfg.eval.conf_thresh)
        if rank == 0:
            write_eval_json(results, os.path.join(out, "eval.json"))
            print_summary(results)
            write_evaluation_plots(out, tensorboard=writer.tb, step=iteration)
        return results

    return PeriodicEval(run_eval, cfg.solver.eval_period, writer)


def train_process(cfg: DictConfig, rank: int, world: int) -> dict:
    if rank > 0:
        logging.getLogger().setLevel(logging.WARNING)  # one copy of the log
    s, out = cfg.solver, cfg.runtime.output_dir
    configure_determinism(cfg.runtime.deterministic)
    seed_everything(cfg.seed + rank)
    threads = set_threads(cfg.runtime.num_threads, cfg.data.num_workers)
    train_set, val_set = build_datasets(cfg)
    model = restore_model(cfg, class_names=train_set.records.class_names, strict=cfg.strict_weights).model
    check_batch_memory(model, ims_per_batch=s.ims_per_batch, world=world, amp=cfg.runtime.amp,
                       min_pixels=smallest_image_pixels(cfg.input.min_size_train, cfg.input.max_size_train,
                                                        train_set.records.aspect_ratios))
    optimizer = build(s.optimizer, "solver.optimizer")(model)
    scheduler = build(s.lr_scheduler, "solver.lr_scheduler")(optimizer)
    scaler = grad_scaler(cfg.runtime.amp, model.device.type)
    record = {"config": checkpoint_config(cfg), "class_names": train_set.records.class_names,
              "data_identity": train_set.records.identity()}
    checkpointer = Checkpointer(out, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, extra=record)
    start_iter = checkpointer.resume(allow_changes=cfg.allow_resume_changes) if cfg.resume else 0
    if start_iter >= s.max_iter:
        raise ValueError(f"resume=true: {checkpointer.last_checkpoint()} is at iteration {start_iter - 1} and "
                         f"solver.max_iter={s.max_iter}: nothing left to train (raise solver.max_iter to train longer); "
                         f"{out} is left as it was")
    if rank == 0:  # after a refused resume, config.yaml still describes the checkpoints beside it
        atomic_write_text(OmegaConf.to_yaml(record["config"]), os.path.join(out, "config.yaml"))
    if start_iter:
        logger.info("resuming from %s at iteration %d", checkpointer.last_checkpoint(), start_iter)
    writer = MetricsWriter(out, enabled=rank == 0)
    evaluator = evaluation_hook(cfg, model, val_set, rank, world, writer)
    hooks = [LRScheduler(scheduler), PeriodicCheckpointer(checkpointer, s.checkpoint_period), evaluator]
    if rank == 0:
        hooks.append(ProgressLogger(writer, period=cfg.log_period))
    logger.info("training on %s (%d threads%s) for %d iterations, %d images per batch, precision %s; output in %s",
                model.device.type, threads, f", {world} processes" if world > 1 else "", s.max_iter, s.ims_per_batch,
                precision_name(cfg.runtime.amp, model.device.type), out)
    if model.device.type == "cpu":
        logger.info("%s", describe_cpu())
    batches = SkippedImageCounter(build_train_loader(train_set, batch_size=s.ims_per_batch, seed=cfg.seed,
                                                     num_workers=cfg.data.num_workers, rank=rank, world_size=world,
                                                     start_iter=start_iter, device=model.device))
    trainer = Trainer(model=wrap_distributed(model, cfg.sync_bn), optimizer=optimizer, data_loader=batches,
                      max_iter=s.max_iter, hooks=hooks, amp=cfg.runtime.amp, clip_grad_norm=s.clip_grad_norm,
                      max_nonfinite_steps=s.max_nonfinite_steps, scaler=scaler)
    try:
        trainer.train(start_iter)
    finally:
        writer.close()
        batches.report()
    if cfg.vis_images and rank == 0:
        draw_dataset_predictions(model, val_set, os.path.join(out, "vis"), cfg.vis_images)
    return evaluator.last_results or {}
