"""SGD with per-group weight decay, and the learning-rate schedules: a linear warmup followed by a
multi-step, cosine or linear decay.

The ``solver.optimizer`` and ``solver.lr_scheduler`` config nodes are partials of these: the training app
calls ``optimizer(model)`` and ``lr_scheduler(optimizer, max_iter=N)``, ``N`` being the run's optimizer
steps (``solver.max_iter``, or what ``solver.epochs`` comes to), so one schedule serves any run length.
"""
from __future__ import annotations

import logging
import math
from bisect import bisect_right
from typing import Annotated, Union

import torch
from torch import nn

from detectres.config.constraints import Fraction, Increasing, NonNegativeFloat, NonNegativeInt, PositiveFloat, Range

logger = logging.getLogger(__name__)

NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.SyncBatchNorm)

# A step is a fraction of the run (a float below 1: 0.75 is three quarters of the way) or an iteration
# (an integer); Detectron2's schedules are written as fractions, so they fit a run of any length.
Step = Union[Annotated[int, Range(0)], Annotated[float, Range(0, 1, hi_open=True)]]


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


def step_iterations(steps: list[int | float], max_iter: int) -> list[int]:
    """``steps`` as iterations of a ``max_iter``-step run: a float below 1 is that fraction of the run
    (rounded, and inside the run however short), an integer is an iteration as given."""
    return [min(round(s * max_iter), max_iter - 1) if isinstance(s, float) else int(s) for s in steps]


def warmup_factor_at(it: int, *, warmup_iters: int, warmup_factor: float) -> float:
    """The warmup multiplier at iteration ``it``: linear from ``warmup_factor`` to 1 over ``warmup_iters``."""
    if it >= warmup_iters:
        return 1.0
    alpha = it / warmup_iters
    return warmup_factor * (1 - alpha) + alpha


def warmup_multistep_factor(it: int, *, steps: list[int], gamma: float, warmup_iters: int,
                            warmup_factor: float) -> float:
    """LR multiplier at iteration ``it``: linear warmup from ``warmup_factor`` to 1 over
    ``warmup_iters``, times ``gamma`` for every step (an iteration) already passed."""
    return gamma ** bisect_right(sorted(steps), it) * warmup_factor_at(it, warmup_iters=warmup_iters,
                                                                        warmup_factor=warmup_factor)


class WarmupLR(torch.optim.lr_scheduler.LRScheduler):
    """The base learning rate times a warmup (linear from ``warmup_factor`` to 1 over ``warmup_iters``) times
    the subclass's ``decay(it)``, as Detectron2's WarmupParamScheduler does; ``max_iter`` is the run's
    length in optimizer steps, given by the training app."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, max_iter: int, warmup_iters: NonNegativeInt = 1000,
                 warmup_factor: Annotated[float, Range(0, 1, lo_open=True)] = 0.001, last_epoch: int = -1):
        self.max_iter = max_iter
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        super().__init__(optimizer, last_epoch)

    def decay(self, it: int) -> float:
        raise NotImplementedError

    def describe(self) -> str:
        """The schedule in words, for the line a run prints at start."""
        return f"warmup {self.warmup_iters} steps, {self.describe_decay()}"

    def describe_decay(self) -> str:
        raise NotImplementedError

    def factor(self, it: int) -> float:
        return self.decay(it) * warmup_factor_at(it, warmup_iters=self.warmup_iters, warmup_factor=self.warmup_factor)

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]

    STATE = ("last_epoch", "_step_count", "base_lrs")

    def state_dict(self) -> dict:
        """Where the run is (its step and base LRs), not the schedule's shape: a resumed run that was made
        longer keeps its own ``max_iter``, steps and decay."""
        return {k: getattr(self, k) for k in self.STATE}

    def load_state_dict(self, state_dict: dict) -> None:
        for k in self.STATE:
            if k in state_dict:
                setattr(self, k, state_dict[k])
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr


class WarmupMultiStepLR(WarmupLR):
    """Multiplied by ``gamma`` at each of ``steps`` (fractions of the run, or iterations); a step at or past
    the end will not happen, which is said once."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, max_iter: int, steps: Annotated[list[Step], Increasing()],
                 gamma: PositiveFloat = 0.1, **warmup):
        self.steps = step_iterations(list(steps), max_iter)
        if sorted(self.steps) != self.steps:
            raise ValueError(f"solver.lr_scheduler.steps={list(steps)} are iterations {self.steps} of this "
                             f"{max_iter}-iteration run, which must increase")
        late = [s for s in self.steps if s >= max_iter]
        if late:
            logger.warning("solver.lr_scheduler.steps: the LR step(s) at iteration %s will not happen in this "
                           "%d-iteration run (steps given as fractions of the run, e.g. [0.75, 0.9], always do)",
                           ", ".join(map(str, late)), max_iter)
        self.gamma = gamma
        super().__init__(optimizer, max_iter=max_iter, **warmup)

    def decay(self, it: int) -> float:
        return self.gamma ** bisect_right(self.steps, it)

    def describe_decay(self) -> str:
        return f"x{self.gamma:g} at step {', '.join(map(str, self.steps)) or '(none)'}"


class WarmupDecayToFinal(WarmupLR):
    """From 1 at the start to ``final_factor`` at the end of the run, along the subclass's ``curve`` (1 at
    progress 0, 0 at progress 1)."""

    kind = ""

    def __init__(self, optimizer: torch.optim.Optimizer, *, max_iter: int, final_factor: Fraction = 0.0, **warmup):
        self.final_factor = final_factor
        super().__init__(optimizer, max_iter=max_iter, **warmup)

    def curve(self, progress: float) -> float:
        raise NotImplementedError

    def decay(self, it: int) -> float:
        return self.final_factor + (1 - self.final_factor) * self.curve(min(it / self.max_iter, 1.0))

    def describe_decay(self) -> str:
        return f"{self.kind} decay to x{self.final_factor:g} at step {self.max_iter}"


class WarmupCosineLR(WarmupDecayToFinal):
    """Half a cosine from 1 at the start to ``final_factor`` at the end of the run."""

    kind = "cosine"

    def curve(self, progress: float) -> float:
        return 0.5 * (1 + math.cos(math.pi * progress))


class WarmupLinearLR(WarmupDecayToFinal):
    """A straight line from 1 at the start to ``final_factor`` at the end of the run."""

    kind = "linear"

    def curve(self, progress: float) -> float:
        return 1 - progress
