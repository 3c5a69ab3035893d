"""The demo application (``demo/demo.py``): restore the detector, open the source and sinks, run the pipeline."""
from __future__ import annotations

import torch
from omegaconf import DictConfig

from detectres.apps.demo.overlay import ModelStage, Overlay
from detectres.apps.demo.pipeline import Pipeline, PipelineStats
from detectres.apps.demo.sinks import WindowSink, open_sinks
from detectres.apps.demo.sources import open_source
from detectres.predictor import Detector
from detectres.utils.env import set_threads


def class_filter(names: list[str] | None, class_names: list[str]) -> set[int] | None:
    if not names:
        return None
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; this model knows {class_names}")
    return {class_names.index(n) for n in names}


def summary(stats: PipelineStats, output: str | None) -> str:
    skipped = f", {stats.skipped} skipped (undecodable: {', '.join(stats.skipped_names[:5])})" if stats.skipped else ""
    note = " (interrupted; output finalised)" if stats.interrupted else ""
    return (f"processed {stats.processed} frames{skipped} in {stats.wall_seconds:.1f} s: {stats.fps:.1f} FPS end to "
            f"end, model {stats.model_fps:.1f} img/s{note}" + (f"; wrote {output}" if output else ""))


def run_demo(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> PipelineStats:
    """Detect on every frame of ``source`` and write/show them (``output``, ``display``)."""
    source = open_source(str(cfg.source))
    set_threads(cfg.runtime.num_threads)
    try:
        detector = Detector.from_app_config(cfg, overrides)
        if detector.model.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every frame has the same size: tune the kernels once
        model = ModelStage(detector.predict_prepared, class_filter(cfg.classes, detector.class_names))
        sinks = open_sinks(cfg.output, cfg.display, source)
        window = next((s for s in sinks if isinstance(s, WindowSink)), None)
        pipeline = Pipeline(source, model, sinks, overlay=Overlay(detector.class_names, cfg.score_thresh),
                            prepare=detector.prepare, max_frames=cfg.max_frames, queue_size=cfg.queue_size,
                            should_stop=(lambda: window.quit_requested) if window else (lambda: False))
        stats = pipeline.run()
    finally:
        source.close()
    print(summary(stats, cfg.output))
    if pipeline.interrupt is not None:  # the output is finalised: now exit 130 / 143 like every tool
        raise pipeline.interrupt
    return stats
