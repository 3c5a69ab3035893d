"""Training hooks: LR schedule, periodic checkpoints, periodic evaluation, progress and metrics."""
from __future__ import annotations

import time
from collections import deque
from typing import Callable

import torch
from tqdm import tqdm

from detectres.engine.checkpoint import Checkpointer
from detectres.engine.trainer import HookBase
from detectres.utils.events import MetricsWriter


class LRScheduler(HookBase):
    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler):
        self.scheduler = scheduler

    def after_step(self) -> None:
        self.scheduler.step()


class PeriodicCheckpointer(HookBase):
    """``model_{iter:07d}.pth`` every ``period`` iterations and ``model_final.pth`` at the end."""

    def __init__(self, checkpointer: Checkpointer, period: int):
        self.checkpointer = checkpointer
        self.period = period

    def after_step(self) -> None:
        it = self.trainer.iter + 1
        if self.period > 0 and it % self.period == 0 and it < self.trainer.max_iter:
            self.checkpointer.save(f"model_{it:07d}", self.trainer.iter)

    def after_train(self) -> None:
        self.checkpointer.save("model_final", self.trainer.max_iter - 1)


class PeriodicEval(HookBase):
    """Calls ``eval_fn(iteration) -> metrics`` every ``period`` iterations and after training;
    results go to ``writer``."""

    def __init__(self, eval_fn: Callable[[int], dict], period: int, writer: MetricsWriter):
        self.eval_fn = eval_fn
        self.period = period
        self.writer = writer
        self.last_eval_iter = -1
        self.last_results: dict | None = None

    def _run(self) -> None:
        results = self.eval_fn(self.trainer.iter)
        self.last_results = results
        self.last_eval_iter = self.trainer.iter
        flat = {f"bbox/{k}": v for k, v in results.items() if isinstance(v, float)}
        self.writer.write(self.trainer.iter, flat)

    def after_step(self) -> None:
        it = self.trainer.iter + 1
        if self.period > 0 and it % self.period == 0 and it < self.trainer.max_iter:
            self._run()

    def after_train(self) -> None:
        if self.last_eval_iter != self.trainer.max_iter - 1:
            self._run()


class ProgressLogger(HookBase):
    """A tqdm bar with ETA and running (median over ``window``) losses; logs every ``period`` steps."""

    def __init__(self, writer: MetricsWriter, period: int = 20, window: int = 20):
        self.writer = writer
        self.period = period
        self.history: dict[str, deque] = {}
        self.window = window
        self.bar: tqdm | None = None
        self._t0 = 0.0

    def before_train(self) -> None:
        t = self.trainer
        self.bar = tqdm(total=t.max_iter, initial=t.start_iter, desc="train", unit="it", dynamic_ncols=True,
                        smoothing=0.1)
        self._t0 = time.perf_counter()
        self._last_iter = t.start_iter

    def after_step(self) -> None:
        t = self.trainer
        for k, v in t.last_losses.items():
            self.history.setdefault(k, deque(maxlen=self.window)).append(v)
        medians = {k: float(torch.tensor(list(v)).median()) for k, v in self.history.items()}
        self.bar.update(1)
        lr = t.optimizer.param_groups[0]["lr"]
        self.bar.set_postfix_str(
            f"loss {medians['total_loss']:.3f} (cls {medians.get('loss_cls', 0):.3f} "
            f"box {medians.get('loss_box_reg', 0):.3f} rpn {medians.get('loss_rpn_cls', 0):.3f}/"
            f"{medians.get('loss_rpn_loc', 0):.3f}) lr {lr:.2e}", refresh=False)
        it = t.iter + 1
        if it % self.period == 0 or it == t.max_iter:
            elapsed = time.perf_counter() - self._t0
            step_time = elapsed / max(1, it - self._last_iter)
            self._t0, self._last_iter = time.perf_counter(), it
            self.writer.write(t.iter, {**medians, "lr": lr, "time": step_time})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
