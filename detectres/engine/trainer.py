"""An iteration-based training loop: one small step function plus hooks.

Under ``torch.distributed`` the model is a DistributedDataParallel wrapper; the loss values are
averaged over ranks before anything is decided from them, so every rank takes the same decision
(step, skip a non-finite step, or stop) and none is left waiting in a collective.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import math
from typing import Iterable

import torch
from torch import nn

from detectres.utils.amp import autocast_context, grad_scaler
from detectres.utils.comm import get_world_size, mean_over_ranks

logger = logging.getLogger(__name__)


class HookBase:
    """Called around training; ``self.trainer`` is set when registered."""

    trainer: "Trainer"

    def before_train(self) -> None: ...
    def after_step(self) -> None: ...
    def after_train(self) -> None: ...
    def close(self) -> None: ...  # always called last, also when training stops on an error


class NonFiniteLossError(FloatingPointError):
    """The loss was NaN or infinite (more often than ``max_nonfinite_steps`` allows)."""


class Trainer:
    """Runs ``max_iter`` SGD steps of ``model`` on batches from ``data_loader``.

    After each step ``self.iter`` is the finished iteration and ``self.last_losses`` its losses
    (averaged over ranks). ``amp``: false, true/bf16 or fp16 (with loss scaling). A step whose loss
    is not finite is skipped (no update) up to ``max_nonfinite_steps`` times; one more stops the run
    with :class:`NonFiniteLossError` naming the iteration and each loss term.

    ``accumulate=K``: each step is K forward/backward passes over equal slices of the batch, each loss
    divided by K, then one optimizer step; with frozen or group norm (and losses that are means over
    images) that is the update of the whole batch at once. ``ema``: a :class:`ModelEMA` updated after
    every applied step. A hook may end the run early with :meth:`request_stop`; the hooks' ``after_train``
    then run as after the last iteration.
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, data_loader: Iterable,
                 max_iter: int, hooks: list[HookBase], amp: bool | str = False, clip_grad_norm: float = 0.0,
                 max_nonfinite_steps: int = 0, scaler: torch.amp.GradScaler | None = None, accumulate: int = 1,
                 ema=None):
        self.model = model
        self.optimizer = optimizer
        self.data_loader = data_loader
        self.max_iter = max_iter
        self.amp = amp
        self.clip_grad_norm = clip_grad_norm
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_steps = 0
        self.scaler = scaler or grad_scaler(amp, next(model.parameters()).device.type)
        self.accumulate = accumulate
        self.ema = ema
        self.stop_reason: str | None = None
        self.hooks = hooks
        for h in hooks:
            h.trainer = self
        self.start_iter = 0
        self.iter = -1
        self.last_losses: dict[str, float] = {}

    def run_step(self, batch: list[dict]) -> dict[str, float]:
        """One step: forward and backward over each micro-batch, then the step's one host sync (the
        rank-averaged losses, read after the last ``backward()`` so the accelerator never waits on the host
        before it), which decides whether the step is applied. Every rank reads the same averages, so all
        apply or all skip."""
        parts = split_batch(batch, self.accumulate)
        self.optimizer.zero_grad(set_to_none=True)
        names, summed = None, None
        for i, part in enumerate(parts):
            with self.gradient_sync(last=i == len(parts) - 1):
                with autocast_context(self.model, self.amp):
                    losses = self.model(part)
                total = sum(losses.values())
                terms = torch.stack([*(v.detach().float() for v in losses.values()), total.detach().float()])
                summed = terms if summed is None else summed + terms
                names = [*losses, "total_loss"]
                self.scaler.scale(total if len(parts) == 1 else total / len(parts)).backward()
        values = mean_over_ranks(summed if len(parts) == 1 else summed / len(parts))
        out = dict(zip(names, values.tolist()))
        if not all(math.isfinite(v) for v in out.values()):
            self.optimizer.zero_grad(set_to_none=True)  # the gradients of a non-finite loss are not kept
            self.on_nonfinite_loss(out)
            return out
        if self.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(unwrap(self.model))
        return out

    def gradient_sync(self, last: bool):
        """Under DDP, gradients are all-reduced only in the last micro-batch's backward."""
        no_sync = getattr(self.model, "no_sync", None)
        return contextlib.nullcontext() if last or no_sync is None else no_sync()

    def request_stop(self, reason: str) -> None:
        """End the run after this iteration (every rank must ask at the same iteration)."""
        self.stop_reason = reason

    def on_nonfinite_loss(self, losses: dict[str, float]) -> None:
        """Skip the step while ``max_nonfinite_steps`` allows; then stop, naming what went wrong."""
        self.nonfinite_steps += 1
        terms = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
        if self.nonfinite_steps <= self.max_nonfinite_steps:
            logger.warning("non-finite loss at iteration %d (%s): step skipped (%d of %d allowed)",
                           self.iter + 1, terms, self.nonfinite_steps, self.max_nonfinite_steps)
            return
        raise NonFiniteLossError(
            f"loss became non-finite at iteration {self.iter + 1}: {terms}. Lower solver.optimizer.base_lr or raise "
            "solver.lr_scheduler.warmup_iters (or allow a few bad steps with solver.max_nonfinite_steps=N); "
            "no checkpoint was written from this state, and resume=true continues from the last one."
        )

    def train(self, start_iter: int = 0) -> None:
        self.start_iter = start_iter
        self.iter = start_iter - 1
        self.model.train()
        try:
            for h in self.hooks:
                h.before_train()
            if start_iter < self.max_iter:
                batches = iter(self.data_loader)
                for it in range(start_iter, self.max_iter):
                    self.last_losses = self.run_step(next(batches))
                    self.iter = it
                    for h in self.hooks:
                        h.after_step()
                    if self.stop_reason is not None:
                        logger.info("stopping at iteration %d of %d: %s", it + 1, self.max_iter, self.stop_reason)
                        break
            for h in reversed(self.hooks):  # unwound: a hook's end runs before those registered ahead of it
                h.after_train()
        finally:
            for h in self.hooks:
                h.close()


def split_batch(batch: list, parts: int) -> list[list]:
    """``batch`` cut into ``parts`` consecutive slices of equal size (the images in the same order)."""
    if len(batch) % parts:
        raise ValueError(f"a batch of {len(batch)} images cannot be cut into {parts} equal micro-batches")
    size = len(batch) // parts
    return [batch[i * size:(i + 1) * size] for i in range(parts)]


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def wrap_distributed(model: nn.Module, sync_bn: bool) -> nn.Module:
    """DistributedDataParallel (with SyncBatchNorm for trainable BN when asked); the model itself when
    there is one process. Each rank keeps its own BN running statistics, as in Detectron2."""
    if get_world_size() == 1:
        return model
    on_gpu = next(model.parameters()).device.type == "cuda"
    if sync_bn:
        if not on_gpu:
            raise ValueError("sync_bn=true needs GPUs (PyTorch's SyncBatchNorm runs on CUDA only); on CPUs use "
                             "model.backbone.norm=FrozenBN or GN")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = nn.parallel.DistributedDataParallel
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
                      else {"broadcast_buffers": False})
    # gradients live in DDP's all-reduce buckets: no copy between them and .grad, less memory
    return ddp(model, device_ids=[torch.cuda.current_device()] if on_gpu else None, gradient_as_bucket_view=True,
               **no_buffer_sync)
