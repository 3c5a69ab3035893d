"""An exponential moving average of a model's weights (Ultralytics' and MMDetection's form).

After every optimizer step each floating-point tensor of the average moves towards the model's:
``ema = d * ema + (1 - d) * weights``, with ``d = decay * (1 - exp(-updates / tau))``, so the average
follows the fast-changing weights of the first steps closely and settles as training does. Integer
buffers (BatchNorm's step counter) are copied. The average is a full model in eval mode: evaluation and
the written checkpoints use it; its state (the average and the update count) is saved and resumed.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, *, decay: float, tau: float = 2000.0):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = 0

    def decay_at(self, updates: int) -> float:
        return self.decay * (1 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards ``model`` (the trained model itself, not a DDP wrapper)."""
        self.updates += 1
        d = self.decay_at(self.updates)
        current = model.state_dict()
        floats, targets = [], []
        for name, value in self.model.state_dict().items():
            if value.is_floating_point():
                floats.append(value)
                targets.append(current[name].detach())
            else:
                value.copy_(current[name])
        torch._foreach_mul_(floats, d)
        torch._foreach_add_(floats, targets, alpha=1 - d)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay, "tau": self.tau}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
