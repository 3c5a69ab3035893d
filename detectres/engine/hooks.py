"""Training hooks: LR schedule, periodic checkpoints, periodic evaluation (with the best model kept and
early stopping), progress and metrics."""
from __future__ import annotations

import datetime
import logging
import math
import resource
import sys
import time
from collections import deque
from typing import Callable

import torch
from tqdm import tqdm

from detectres.engine.checkpoint import Checkpointer
from detectres.engine.trainer import HookBase
from detectres.utils.events import MetricsWriter
from detectres.utils.logfile import shows_progress_bars, to_log_file

logger = logging.getLogger("detectres")


class LRScheduler(HookBase):
    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler):
        self.scheduler = scheduler

    def after_step(self) -> None:
        self.scheduler.step()


class PeriodicCheckpointer(HookBase):
    """``model_{iter:07d}.pth`` every ``period`` iterations and ``model_final.pth`` at the end (also after an
    early stop)."""

    def __init__(self, checkpointer: Checkpointer, period: int):
        self.checkpointer = checkpointer
        self.period = period

    def after_step(self) -> None:
        it = self.trainer.iter + 1
        if self.period > 0 and it % self.period == 0 and it < self.trainer.max_iter:
            self.checkpointer.save(f"model_{it:07d}", self.trainer.iter)

    def after_train(self) -> None:
        stopped = self.trainer.stop_reason
        self.checkpointer.save("model_final", self.trainer.iter, fields={"stop_reason": stopped} if stopped else None)


def headline_metric(results: dict) -> str:
    """The metric a dataset is ranked by: the VOC mAP (AP at IoU 0.5) for VOC, COCO's AP otherwise."""
    return "bbox/AP50" if str(results.get("metric", "")).startswith("voc") else "bbox/AP"


class BestModel:
    """Keeps ``model_best.pth``: the checkpoint with the highest ``metric`` (None: :func:`headline_metric`)
    among the evaluations so far; counts the evaluations since it improved, for early stopping
    (``patience``; 0 never stops). Its state is saved in every checkpoint and resumed with it."""

    def __init__(self, checkpointer: Checkpointer, *, metric: str | None, patience: int):
        self.checkpointer = checkpointer
        self.metric = metric
        self.patience = patience
        self.value: float | None = None
        self.iteration = -1
        self.since_best = 0

    def state_dict(self) -> dict:
        return {"metric": self.metric, "value": self.value, "iteration": self.iteration,
                "evaluations_since_best": self.since_best}

    def load_state_dict(self, state: dict) -> None:
        self.metric = state.get("metric") or self.metric
        self.value, self.iteration, self.since_best = state["value"], state["iteration"], state["evaluations_since_best"]

    def update(self, iteration: int, flat: dict[str, float], results: dict) -> str | None:
        """Record the evaluation at ``iteration``; the reason to stop, when patience has run out."""
        self.metric = self.metric or headline_metric(results)
        if self.metric not in flat:
            raise ValueError(f"solver.best_metric={self.metric} is not among this evaluation's metrics "
                             f"({', '.join(sorted(flat))})")
        value = flat[self.metric]
        if math.isfinite(value) and (self.value is None or value > self.value):
            self.value, self.iteration, self.since_best = value, iteration, 0
            path = self.checkpointer.save("model_best", iteration, mark_last=False)
            logger.info("best %s so far: %.4f at iteration %d; wrote %s", self.metric, value, iteration + 1, path)
            return None
        self.since_best += 1
        logger.info("%s %.4f: no better than %.4f at iteration %d (%d evaluation(s) without improvement)",
                    self.metric, value, self.value if self.value is not None else float("nan"),
                    self.iteration + 1, self.since_best)
        if self.patience and self.since_best >= self.patience:
            return (f"{self.metric} has not improved for {self.since_best} evaluations (solver.patience="
                    f"{self.patience}); the best, {self.value:.4f} at iteration {self.iteration + 1}, is in model_best.pth")
        return None


class PeriodicEval(HookBase):
    """Calls ``eval_fn(iteration) -> metrics`` every ``period`` iterations and after training; results go to
    ``writer``, and to ``best`` (which may end the run early)."""

    def __init__(self, eval_fn: Callable[[int], dict], period: int, writer: MetricsWriter,
                 best: BestModel | None = None):
        self.eval_fn = eval_fn
        self.period = period
        self.writer = writer
        self.best = best
        self.last_eval_iter = -1
        self.last_results: dict | None = None

    def _run(self) -> str | None:
        results = self.eval_fn(self.trainer.iter)
        self.last_results = results
        self.last_eval_iter = self.trainer.iter
        flat = {f"bbox/{k}": v for k, v in results.items() if isinstance(v, float)}
        self.writer.write(self.trainer.iter, flat)
        return self.best.update(self.trainer.iter, flat, results) if self.best is not None else None

    def after_step(self) -> None:
        it = self.trainer.iter + 1
        if self.period > 0 and it % self.period == 0 and it < self.trainer.max_iter:
            stop = self._run()
            if stop:
                self.trainer.request_stop(stop)

    def after_train(self) -> None:
        if self.last_eval_iter != self.trainer.iter:
            self._run()


def memory_in_use(device: torch.device) -> float:
    """Peak memory in MiB: allocated on the GPU, or this process's resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class ProgressLogger(HookBase):
    """Progress with ETA and running (median over ``window``) losses. On a terminal, a tqdm bar; every
    ``period`` iterations a metrics line (iteration, losses, LR, time per iteration, ETA, memory) goes to
    ``metrics.jsonl``, and to the log file - and to the terminal too when no bar is drawn (stderr is a file
    or a pipe)."""

    def __init__(self, writer: MetricsWriter, period: int = 20, window: int = 20, device: str = "cpu"):
        self.writer = writer
        self.period = period
        self.history: dict[str, deque] = {}
        self.window = window
        self.device = torch.device(device)
        self.bar: tqdm | None = None
        self._t0 = 0.0

    def before_train(self) -> None:
        t = self.trainer
        if shows_progress_bars():
            self.bar = tqdm(total=t.max_iter, initial=t.start_iter, desc="train", unit="it", dynamic_ncols=True,
                            smoothing=0.1, file=sys.stderr)
        self._start = self._t0 = time.perf_counter()
        self._first_iter = self._last_iter = t.start_iter

    def after_step(self) -> None:
        t = self.trainer
        for k, v in t.last_losses.items():
            self.history.setdefault(k, deque(maxlen=self.window)).append(v)
        medians = {k: float(torch.tensor(list(v)).median()) for k, v in self.history.items()}
        lr = t.optimizer.param_groups[0]["lr"]
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(
                f"loss {medians['total_loss']:.3f} (cls {medians.get('loss_cls', 0):.3f} "
                f"box {medians.get('loss_box_reg', 0):.3f} rpn {medians.get('loss_rpn_cls', 0):.3f}/"
                f"{medians.get('loss_rpn_loc', 0):.3f}) lr {lr:.2e}", refresh=False)
        it = t.iter + 1
        if it % self.period == 0 or it == t.max_iter or t.stop_reason is not None:
            now = time.perf_counter()
            step_time = (now - self._t0) / max(1, it - self._last_iter)
            self._t0, self._last_iter = now, it
            self.writer.write(t.iter, {**medians, "lr": lr, "time": step_time})
            self.log_line(it, t.max_iter, medians, lr, step_time, now)

    def log_line(self, it: int, max_iter: int, medians: dict, lr: float, step_time: float, now: float) -> None:
        rate = (now - self._start) / max(1, it - self._first_iter)
        eta = datetime.timedelta(seconds=round(rate * (max_iter - it)))
        losses = "  ".join(f"{k} {v:.4f}" for k, v in medians.items())
        line = (f"iter {it}/{max_iter}  {losses}  lr {lr:.3e}  {step_time:.3f} s/it  eta {eta}  "
                f"mem {memory_in_use(self.device):.0f} MiB")
        if self.bar is not None:
            to_log_file(line)  # the bar shows it on the terminal
        else:
            logger.info("%s", line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
