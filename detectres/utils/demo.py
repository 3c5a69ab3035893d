"""What ``demo/demo.py`` runs: build the detector, open the input and outputs, run the pipeline."""
from __future__ import annotations

import os

import torch
from omegaconf import DictConfig

from detectres.config import resolve_device
from detectres.predictor import Detector
from detectres.utils.pipeline import PipelineStats, run_pipeline
from detectres.utils.video import (
    VIDEO_FOURCC, ImageDirSink, SourceError, VideoSink, WindowSink, display_available, open_source,
)


def build_detector(cfg: DictConfig) -> Detector:
    device = resolve_device(cfg.device)
    if cfg.checkpoint:
        det = Detector.from_checkpoint(cfg.checkpoint, device=device)
    elif cfg.model.get("weights"):
        det = Detector.from_config(cfg, weights=cfg.model.weights, device=device)
    else:
        raise ValueError("no weights: pass checkpoint=PATH or model=NAME model.weights=PATH")
    if cfg.fp16:
        det.amp = True
        det.amp_dtype = torch.float16 if device.startswith("cuda") else torch.bfloat16
    return det


def build_sinks(cfg: DictConfig, source) -> list:
    sinks: list = []
    if cfg.output:
        if os.path.splitext(str(cfg.output))[1].lower() in VIDEO_FOURCC:
            if source.size is None:
                raise SourceError(f"cannot write a video for {cfg.input}: the input has no fixed frame size; "
                                  "give output=FOLDER")
            sinks.append(VideoSink(cfg.output, source.fps, source.size))
        else:
            sinks.append(ImageDirSink(cfg.output))
    show = display_available() if cfg.display == "auto" else bool(cfg.display)
    if show:
        if not display_available():
            raise SourceError("display=true but no window can be opened (no display, or OpenCV built without "
                              "a GUI as opencv-python-headless is); use display=false with output=PATH")
        sinks.append(WindowSink())
    if not sinks:
        raise SourceError("nothing to show or write: give output=PATH (no display here)")
    return sinks


def class_filter(names: list[str] | None, class_names: list[str]) -> set[int] | None:
    if not names:
        return None
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; this model knows {class_names}")
    return {class_names.index(n) for n in names}


def run_demo(cfg: DictConfig) -> PipelineStats:
    source = open_source(str(cfg.input))
    try:
        detector = build_detector(cfg)
        sinks = build_sinks(cfg, source)
        window = next((s for s in sinks if isinstance(s, WindowSink)), None)
        stats = run_pipeline(source, detector.predict_prepared, sinks, class_names=detector.class_names,
                             prepare=detector.prepare,
                             score_thresh=cfg.score_thresh,
                             keep_labels=class_filter(cfg.classes, detector.class_names),
                             max_frames=cfg.max_frames, queue_size=cfg.queue_size,
                             should_stop=(lambda: window.quit_requested) if window else (lambda: False))
    finally:
        source.close()
    skipped = f", {stats.skipped} skipped (undecodable: {', '.join(stats.skipped_names[:5])})" if stats.skipped else ""
    note = " (interrupted; output finalised)" if stats.interrupted else ""
    print(f"processed {stats.processed} frames{skipped} in {stats.wall_seconds:.1f} s: {stats.fps:.1f} FPS end to end, "
          f"model {stats.model_fps:.1f} img/s{note}" + (f"; wrote {cfg.output}" if cfg.output else ""))
    return stats
