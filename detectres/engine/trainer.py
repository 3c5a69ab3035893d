"""An iteration-based training loop: one small step function plus hooks."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from detectres.engine.amp import autocast_context


class HookBase:
    """Called around training; ``self.trainer`` is set when registered."""

    trainer: "Trainer"

    def before_train(self) -> None: ...
    def after_step(self) -> None: ...
    def after_train(self) -> None: ...


class Trainer:
    """Runs ``max_iter`` SGD steps of ``model`` on batches from ``data_loader``.

    After each step ``self.iter`` is the finished iteration and ``self.last_losses`` its losses.
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, data_loader: Iterable,
                 max_iter: int, hooks: list[HookBase], amp: bool = False, clip_grad_norm: float = 0.0):
        self.model = model
        self.optimizer = optimizer
        self.data_loader = data_loader
        self.max_iter = max_iter
        self.amp = amp
        self.clip_grad_norm = clip_grad_norm
        self.hooks = hooks
        for h in hooks:
            h.trainer = self
        self.start_iter = 0
        self.iter = -1
        self.last_losses: dict[str, float] = {}

    def run_step(self, batch: list[dict]) -> dict[str, float]:
        with autocast_context(self.model, self.amp):
            losses = self.model(batch)
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"loss became {total.item()} at iteration {self.iter + 1}: "
                + ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
                + ". Lower solver.base_lr or raise solver.warmup_iters."
            )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.optimizer.step()
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["total_loss"] = float(total.detach())
        return out

    def train(self, start_iter: int = 0) -> None:
        self.start_iter = start_iter
        self.iter = start_iter - 1
        self.model.train()
        for h in self.hooks:
            h.before_train()
        if start_iter < self.max_iter:
            batches = iter(self.data_loader)
            for it in range(start_iter, self.max_iter):
                self.last_losses = self.run_step(next(batches))
                self.iter = it
                for h in self.hooks:
                    h.after_step()
        for h in self.hooks:
            h.after_train()

