"""The training-step benchmark (``tools/train_benchmark.py``): step time and peak accelerator memory of
one model at several precisions.

Each precision gets a fresh model (same seed, the benchmark's deterministic weight rules) and runs
:meth:`Trainer.run_step`, the step real training runs (loss scaling included for fp16).
"""
from __future__ import annotations

import json
import os
import statistics
import time

import torch
from omegaconf import DictConfig

from detectres.apps.benchmark_models import init_weights
from detectres.apps.benchmark_timing import annotated_image, sample_inputs, synchronize
from detectres.engine.trainer import Trainer
from detectres.modeling.build import build_model
from detectres.utils.amp import precision_name
from detectres.utils.env import resolve_device
from detectres.utils.file_io import atomic_write_text

MODES = {"fp32": False, "bf16": "bf16", "fp16": "fp16"}


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


def main(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Print one line per precision; write ``train_benchmark.json`` to ``runtime.output_dir``."""
    torch.set_num_threads(cfg.runtime.num_threads or os.cpu_count() or 1)
    device = resolve_device(cfg.runtime.device)
    image, boxes, classes = annotated_image(cfg.image, cfg.ann_file)
    item, _ = sample_inputs(image, boxes, classes, cfg.min_size, cfg.max_size)
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(f"{gpu}; torch {torch.__version__}; input {tuple(item['image'].shape[1:])} x {cfg.batch} images")
    figures = {}
    for mode in cfg.modes:
        f = step_figures(model_cfg=cfg.model, batch=[item] * cfg.batch, mode=mode, iters=cfg.iters,
                         warmup=cfg.warmup, device=device)
        figures[mode] = f
        memory = f"{f['peak_memory_gib']:.2f} GiB" if f["peak_memory_gib"] is not None else "n/a (CPU)"
        ran = precision_name(MODES[mode], device.split(":")[0])
        label = mode if ran == mode else f"{mode} (ran {ran}: not native here)"
        print(f"{label:<5} {f['seconds_per_iter']:.4f} s/iter  peak memory {memory}  loss {f['total_loss']:.3f}")
    if cfg.runtime.output_dir:
        atomic_write_text(json.dumps({"device": gpu, "batch": cfg.batch, "min_size": cfg.min_size, **figures}, indent=2),
                          os.path.join(cfg.runtime.output_dir, "train_benchmark.json"))
    return figures
