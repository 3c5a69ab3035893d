"""The training application (``tools/train_net.py``): datasets, model, solver and hooks, then the loop;
it evaluates (every ``solver.eval_period`` and at the end) and draws a few validation images.

Under ``torchrun`` every rank runs this; rank 0 alone writes checkpoints, metrics and images.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from detectres.config import build, checkpoint_config
from detectres.data.build import build_datasets
from detectres.data.loader import SkippedImageCounter, build_test_loader, build_train_loader
from detectres.engine.checkpoint import Checkpointer
from detectres.engine.ema import ModelEMA
from detectres.engine.hooks import (
    BestModel, LRScheduler, PeriodicCheckpointer, PeriodicEval, ProgressLogger, headline_metric,
)
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
from detectres.utils.logfile import printed_lines_logged
from detectres.utils.tracking import start_trackers
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


def evaluation_hook(cfg: DictConfig, model, val_set, rank: int, world: int, writer: MetricsWriter, period: int,
                    best: BestModel | None) -> PeriodicEval:
    """Evaluation of ``model`` (the EMA of the weights when kept) on the validation split every ``period``
    iterations and at the end; rank 0 writes ``eval.json`` and the plots and prints the summary."""
    out = cfg.runtime.output_dir
    loader = build_test_loader(val_set, num_workers=cfg.data.num_workers, rank=rank, world_size=world,
                               device=model.device)

    def run_eval(iteration: int) -> dict:
        results = evaluate_detector(model, loader, build_evaluator(cfg.data, val_set.records), os.path.join(out, "inference"),
                                    autocast=cfg.runtime.amp, conf_thresh=cfg.eval.conf_thresh)
        if rank == 0:
            write_eval_json(results, os.path.join(out, "eval.json"))
            print_summary(results)
            plots = write_evaluation_plots(out, tensorboard=writer.tb, step=iteration)
            writer.log_artifacts([os.path.join(out, "eval.json"), *plots])
        return results

    return PeriodicEval(run_eval, period, writer, best)


@dataclass
class RunLength:
    """The run in optimizer steps: ``max_iter`` and the periods, from ``solver.max_iter`` or from
    ``solver.epochs`` (an epoch is ``ceil(training images / ims_per_batch)`` steps; the periods count epochs)."""

    max_iter: int
    checkpoint_period: int
    eval_period: int
    per_epoch: int | None = None

    @classmethod
    def of(cls, solver: DictConfig, images: int) -> "RunLength":
        if solver.epochs is None:
            return cls(solver.max_iter, solver.checkpoint_period, solver.eval_period)
        per_epoch = -(-images // solver.ims_per_batch)
        return cls(solver.epochs * per_epoch, solver.checkpoint_period * per_epoch, solver.eval_period * per_epoch,
                   per_epoch)

    def describe(self, solver: DictConfig, images: int, scheduler) -> str:
        how = (f"solver.epochs={solver.epochs}: {images} training images at {solver.ims_per_batch} per step = "
               f"{self.per_epoch} steps per epoch, so {self.max_iter} steps" if self.per_epoch else
               f"{self.max_iter} steps ({self.max_iter * solver.ims_per_batch / max(1, images):.1f} epochs of "
               f"{images} training images)")
        return f"{how}; {describe_schedule(scheduler)}; {self.describe_periods()}"

    def describe_periods(self) -> str:
        def every(period: int, what: str) -> str:
            if not period:
                return f"{what} at the end"
            epochs = f" ({period // self.per_epoch} epochs)" if self.per_epoch else ""
            late = " - longer than the run: only at the end" if period >= self.max_iter else ""
            return f"{what} every {period} steps{epochs}{late}"
        return f"{every(self.eval_period, 'evaluation')}, {every(self.checkpoint_period, 'checkpoints')}"


def describe_schedule(scheduler) -> str:
    """The schedule's own words (a detectres schedule's ``describe``), else its class name."""
    return f"LR: {scheduler.describe() if hasattr(scheduler, 'describe') else type(scheduler).__name__}"


def train_process(cfg: DictConfig, rank: int, world: int) -> dict:
    with printed_lines_logged():
        return run_training(cfg, rank, world)


@dataclass
class SolverState:
    """What a run trains with and checkpoints: optimizer, schedule, loss scaler, the EMA of the weights and
    the best evaluation so far (when kept), and the checkpointer that saves and resumes all of them."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None
    best: BestModel | None
    checkpointer: Checkpointer
    record: dict

    @classmethod
    def build(cls, cfg: DictConfig, model, train_set, length: RunLength) -> "SolverState":
        s = cfg.solver
        optimizer = build(s.optimizer, "solver.optimizer")(model)
        scheduler = build(s.lr_scheduler, "solver.lr_scheduler")(optimizer, max_iter=length.max_iter)
        scaler = grad_scaler(cfg.runtime.amp, model.device.type)
        ema = ModelEMA(model, decay=s.ema.decay, tau=s.ema.tau) if s.ema.decay > 0 else None
        record = {"config": checkpoint_config(cfg), "class_names": train_set.records.class_names,
                  "data_identity": train_set.records.identity()}
        checkpointer = Checkpointer(cfg.runtime.output_dir, model=model, optimizer=optimizer, scheduler=scheduler,
                                    scaler=scaler, extra=record)
        best = BestModel(checkpointer, metric=s.best_metric, patience=s.patience) if length.eval_period else None
        checkpointer.stateful.update({k: v for k, v in (("ema", ema), ("best", best)) if v is not None})
        return cls(optimizer, scheduler, scaler, ema, best, checkpointer, record)

    def resume(self, cfg: DictConfig, length: RunLength, rank: int) -> int:
        """The iteration to start from (a resumed run's next one, else 0); writes ``config.yaml``."""
        out = cfg.runtime.output_dir
        start_iter = self.checkpointer.resume(allow_changes=cfg.allow_resume_changes) if cfg.resume else 0
        if self.checkpointer.stop_reason:
            raise ValueError(f"resume=true: {self.checkpointer.last_checkpoint()} ended the run early ("
                             f"{self.checkpointer.stop_reason}): nothing to continue; pass overwrite=true to start "
                             f"over, or choose another runtime.output_dir; {out} is left as it was")
        if start_iter >= length.max_iter:
            raise ValueError(f"resume=true: {self.checkpointer.last_checkpoint()} is at iteration {start_iter - 1} and "
                             f"the run is {length.max_iter} steps long: nothing left to train (raise solver.max_iter "
                             f"or solver.epochs to train longer); {out} is left as it was")
        if rank == 0:  # after a refused resume, config.yaml still describes the checkpoints beside it
            atomic_write_text(OmegaConf.to_yaml(self.record["config"]), os.path.join(out, "config.yaml"))
        if start_iter:
            logger.info("resuming from %s at iteration %d", self.checkpointer.last_checkpoint(), start_iter)
        return start_iter


def log_plan(cfg: DictConfig, model, threads: int, world: int, length: RunLength, state: SolverState,
             images: int) -> None:
    s = cfg.solver
    logger.info("training on %s (%d threads%s), %d images per step%s, precision %s%s; output in %s",
                model.device.type, threads, f", {world} processes" if world > 1 else "", s.ims_per_batch,
                f" in {s.accumulate} micro-batches" if s.accumulate > 1 else "",
                precision_name(cfg.runtime.amp, model.device.type),
                f", EMA of the weights (decay {s.ema.decay:g}, tau {s.ema.tau:g})" if state.ema else "",
                cfg.runtime.output_dir)
    logger.info("%s", length.describe(s, images, state.scheduler))
    if model.device.type == "cpu":
        logger.info("%s", describe_cpu())


def start_writer(cfg: DictConfig, state: SolverState, rank: int) -> MetricsWriter:
    """metrics.jsonl, TensorBoard and the trackers ``runtime.loggers`` names (rank 0 only)."""
    out = cfg.runtime.output_dir
    trackers = start_trackers(list(cfg.runtime.loggers), output_dir=out, run_name=os.path.basename(os.path.abspath(out)),
                              config=state.record["config"], resume=bool(cfg.resume)) if rank == 0 else []
    writer = MetricsWriter(out, tensorboard="tensorboard" in cfg.runtime.loggers, enabled=rank == 0, trackers=trackers)
    writer.log_artifacts([os.path.join(out, "config.yaml")])
    return writer


def run_training(cfg: DictConfig, rank: int, world: int) -> dict:
    if rank > 0:
        logging.getLogger().setLevel(logging.WARNING)  # one copy of the log
    s, out = cfg.solver, cfg.runtime.output_dir
    configure_determinism(cfg.runtime.deterministic)
    seed_everything(cfg.seed + rank)
    threads = set_threads(cfg.runtime.num_threads, cfg.data.num_workers)
    train_set, val_set = build_datasets(cfg)
    model = restore_model(cfg, class_names=train_set.records.class_names, strict=cfg.strict_weights).model
    check_batch_memory(model, ims_per_batch=s.ims_per_batch // s.accumulate, world=world, amp=cfg.runtime.amp,
                       min_pixels=smallest_image_pixels(cfg.input.min_size_train, cfg.input.max_size_train,
                                                        train_set.records.aspect_ratios))
    length = RunLength.of(s, len(train_set))
    state = SolverState.build(cfg, model, train_set, length)
    start_iter = state.resume(cfg, length, rank)
    writer = start_writer(cfg, state, rank)
    final, failed = os.path.join(out, "model_final.pth"), True
    try:  # the trackers hear how the run ended, whatever happens from here
        evaluated = state.ema.model if state.ema else model
        evaluator = evaluation_hook(cfg, evaluated, val_set, rank, world, writer, length.eval_period, state.best)
        # evaluation before the checkpoint of the same step, which then holds the best model's state after it; at
        # the end (hooks unwound in reverse) model_final.pth is written before the final evaluation, which may fail
        hooks = [LRScheduler(state.scheduler), evaluator,
                 PeriodicCheckpointer(state.checkpointer, length.checkpoint_period)]
        if rank == 0:
            hooks.append(ProgressLogger(writer, period=cfg.log_period, device=model.device))
        log_plan(cfg, model, threads, world, length, state, len(train_set))
        batches = SkippedImageCounter(build_train_loader(train_set, batch_size=s.ims_per_batch, seed=cfg.seed,
                                                         num_workers=cfg.data.num_workers, rank=rank, world_size=world,
                                                         start_iter=start_iter, device=model.device))
        trainer = Trainer(model=wrap_distributed(model, cfg.sync_bn), optimizer=state.optimizer, data_loader=batches,
                          max_iter=length.max_iter, hooks=hooks, amp=cfg.runtime.amp, clip_grad_norm=s.clip_grad_norm,
                          max_nonfinite_steps=s.max_nonfinite_steps, scaler=state.scaler, accumulate=s.accumulate,
                          ema=state.ema)
        try:
            trainer.train(start_iter)
        finally:
            batches.report()
        failed = False
    finally:
        writer.finish(final_checkpoint=None if failed else final, failed=failed)
        writer.close()
    if cfg.vis_images and rank == 0:
        draw_dataset_predictions(evaluated, val_set, os.path.join(out, "vis"), cfg.vis_images)
    results = evaluator.last_results or {}
    logger.info("%s", final_line(trainer, results, state.best, final))
    return results


def final_line(trainer: Trainer, results: dict, best: BestModel | None, final: str) -> str:
    how = (f"stopped early at step {trainer.iter + 1} of {trainer.max_iter}" if trainer.stop_reason
           else f"finished {trainer.max_iter} steps")
    score = f"; final {headline_metric(results)} {results[headline_metric(results)[5:]]:.4f}" if results else ""
    kept = (f"; best {best.metric} {best.value:.4f} at step {best.iteration + 1} in model_best.pth"
            if best is not None and best.value is not None else "")
    return f"training {how}{score}; wrote {final}{kept}"
