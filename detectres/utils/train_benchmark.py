"""Training step time and peak accelerator memory of one model at several precisions.

Each precision gets a fresh model (same seed, the benchmark's deterministic weight rules) and runs
:meth:`Trainer.run_step`, the step real training runs (loss scaling included for fp16).
"""
from __future__ import annotations

import statistics
import time

import torch
from omegaconf import DictConfig

from detectres.config import build_model
from detectres.engine.trainer import Trainer
from detectres.utils.benchmark import init_weights

MODES = {"fp32": False, "bf16": "bf16", "fp16": "fp16"}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_figures(*, model_cfg: DictConfig, batch: list[dict], mode: str, iters: int, warmup: int,
                 device: str) -> dict[str, float | None]:
    """Median seconds per training step and peak allocated memory (GiB, CUDA only) for ``mode``."""
    if mode not in MODES:
        raise ValueError(f"unknown precision {mode!r}; choose from {', '.join(MODES)}")
    torch.manual_seed(0)
    model = build_model(model_cfg, num_classes=80).to(device)
    init_weights(model, seed=0)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    trainer = Trainer(model=model, optimizer=optimizer, data_loader=[], max_iter=0, hooks=[], amp=MODES[mode])
    model.train()
    for _ in range(warmup):
        trainer.run_step(batch)
    synchronize(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        losses = trainer.run_step(batch)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    del trainer, optimizer, model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"seconds_per_iter": statistics.median(times), "peak_memory_gib": peak,
            "total_loss": losses["total_loss"]}
