"""SGD with per-group weight decay, and the warmup + multi-step learning-rate schedule.

The ``solver.optimizer`` and ``solver.lr_scheduler`` config nodes are partials of these two: the
training app calls ``optimizer(model)`` and ``lr_scheduler(optimizer)``.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Annotated

import torch
from torch import nn

from detectres.config.constraints import Increasing, NonNegativeFloat, NonNegativeInt, PositiveFloat, Range

NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.SyncBatchNorm)


def build_optimizer(model: nn.Module, *, base_lr: PositiveFloat, momentum: Annotated[float, Range(0, 1)] = 0.9,
                    weight_decay: NonNegativeFloat = 1e-4, weight_decay_norm: NonNegativeFloat = 0.0,
                    nesterov: bool = False) -> torch.optim.SGD:
    """SGD over trainable parameters; normalisation layers get ``weight_decay_norm`` (Detectron2)."""
    norm_params, other_params = [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                (norm_params if isinstance(module, NORM_TYPES) else other_params).append(p)
    groups = [{"params": other_params, "weight_decay": weight_decay}]
    if norm_params:
        groups.append({"params": norm_params, "weight_decay": weight_decay_norm})
    return torch.optim.SGD(groups, lr=base_lr, momentum=momentum, nesterov=nesterov)


def warmup_multistep_factor(it: int, *, steps: list[int], gamma: float, warmup_iters: int,
                            warmup_factor: float) -> float:
    """LR multiplier at iteration ``it``: linear warmup from ``warmup_factor`` to 1 over
    ``warmup_iters``, times ``gamma`` for every step already passed."""
    factor = gamma ** bisect_right(sorted(steps), it)
    if it < warmup_iters:
        alpha = it / warmup_iters
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor


class WarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    def __init__(self, optimizer: torch.optim.Optimizer, *, steps: Annotated[list[NonNegativeInt], Increasing()],
                 gamma: PositiveFloat = 0.1, warmup_iters: NonNegativeInt = 1000,
                 warmup_factor: Annotated[float, Range(0, 1, lo_open=True)] = 0.001, last_epoch: int = -1):
        self.steps = list(steps)
        self.gamma = gamma
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        f = warmup_multistep_factor(self.last_epoch, steps=self.steps, gamma=self.gamma,
                                    warmup_iters=self.warmup_iters, warmup_factor=self.warmup_factor)
        return [base * f for base in self.base_lrs]
