"""The benchmark application (``tools/benchmark.py``): speed of detectres against torchvision, on the CPU or
a GPU (``runtime.device``); the models and their shared settings are in :mod:`benchmark_models`.

Three comparisons: R50-C4 training step and inference at ``min_size`` (``runtime.amp`` applies to both
models); R101-C4 inference at ``large.min_size`` (800): detectres in fp32 and, where the device computes
bf16 natively, in bf16, against torchvision in fp32; and R50-FPN training and inference at ``fpn.min_size``
(800) against torchvision's ``fasterrcnn_resnet50_fpn``, with detectres R50-C4 inference on the same input
(fp32). Timings are interleaved so drift (thermal, other processes) hits all alike; GPU timings synchronize.
"""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import torch
from omegaconf import DictConfig

from detectres.apps.benchmark_fpn import print_fpn, print_fpn_ratio_lines, run_fpn_benchmark
from detectres.apps.benchmark_models import build_detectres_c4, build_torchvision_c4, init_weights
from detectres.apps.benchmark_timing import (annotated_image, bf16_available, count_proposals, inference_step,
                                             interleaved_medians, make_steps, sample_inputs, stage_times, to_device)
from detectres.config import checkpoint_config, compose_config
from detectres.data.coco_names import COCO_CLASSES
from detectres.data.image_io import read_image_file
from detectres.modeling.build import build_model
from detectres.utils.amp import amp_dtype, describe_cpu
from detectres.utils.env import resolve_device
from detectres.utils.file_io import atomic_torch_save, atomic_write_text


def run_benchmark(*, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, min_size: int, max_size: int,
                  rounds: int, warmup: int = 1, amp: bool | str = False, device: str = "cpu", log=print) -> dict:
    """R50-C4: median seconds per training iteration and per inference image for both models, and ratios."""
    torch.manual_seed(0)
    ours, theirs = build_detectres_c4().to(device), build_torchvision_c4(min_size, max_size).to(device)
    init_weights(ours, seed=0)
    init_weights(theirs, seed=0)
    ours_in, theirs_in = to_device(*sample_inputs(image, boxes, classes, min_size, max_size), device)
    steps = make_steps(ours, theirs, ours_in, theirs_in, amp)
    n_ours, n_theirs = count_proposals(ours, steps[("inference", "detectres")]), \
        count_proposals(theirs, steps[("inference", "torchvision")])
    log(f"R50-C4 input {tuple(ours_in['image'].shape[1:])}; test proposals per image: detectres {n_ours}, "
        f"torchvision {n_theirs}")
    med = interleaved_medians(steps, rounds=rounds, warmup=warmup, device=device, log=log)
    return {
        "train_detectres": med[("train", "detectres")], "train_torchvision": med[("train", "torchvision")],
        "inference_detectres": med[("inference", "detectres")],
        "inference_torchvision": med[("inference", "torchvision")],
        "train_ratio": med[("train", "detectres")] / med[("train", "torchvision")],
        "inference_ratio": med[("inference", "detectres")] / med[("inference", "torchvision")],
    }


def run_large_inference(*, image: np.ndarray, min_size: int, max_size: int, rounds: int, warmup: int,
                        device: str, proposals: int = 300, log=print) -> dict:
    """R101-C4 inference at ``min_size``: detectres fp32 and bf16 (where native) against the
    torchvision-assembled R101-C4 in fp32, interleaved; median seconds per image, ratios and the
    per-stage times of detectres."""
    torch.manual_seed(0)
    ours = build_detectres_c4(depth=101, post_nms_topk_test=proposals).to(device).eval()
    theirs = build_torchvision_c4(min_size, max_size, depth=101, post_nms_topk_test=proposals).to(device).eval()
    init_weights(ours, seed=0)
    init_weights(theirs, seed=0)
    ours_in, theirs_in = to_device(*sample_inputs(image, np.zeros((0, 4)), np.zeros(0), min_size, max_size), device)
    modes = ["fp32", "bf16"] if bf16_available(device) else ["fp32"]
    steps = {("detectres", m): inference_step(ours, lambda: ours.inference([ours_in]), m == "bf16" and "bf16")
             for m in modes}
    steps[("torchvision", "fp32")] = inference_step(theirs, lambda: theirs([theirs_in[0]]), False)
    counts = (count_proposals(ours, steps[("detectres", "fp32")]), count_proposals(theirs, steps[("torchvision", "fp32")]))
    log(f"R101-C4 input {tuple(ours_in['image'].shape[1:])}; test proposals per image: detectres {counts[0]}, "
        f"torchvision {counts[1]}; precisions compared: {', '.join(modes)}")
    med = interleaved_medians(steps, rounds=rounds, warmup=warmup, device=device, log=log)
    reference = med[("torchvision", "fp32")]
    out = {"torchvision_fp32": reference, "input": list(ours_in["image"].shape[1:]), "proposals": list(counts),
           "torchvision_input": list(theirs.transform(theirs_in[0:1])[0].tensors.shape[-2:])}
    for m in modes:
        out[f"detectres_{m}"] = med[("detectres", m)]
        out[f"ratio_{m}"] = med[("detectres", m)] / reference
        out[f"stages_{m}"] = stage_times(ours, ours_in, m == "bf16" and "bf16", device)
    return out


def main(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Print both comparisons and end with the ratio lines; write ``benchmark.json`` to ``runtime.output_dir``."""
    torch.set_num_threads(cfg.runtime.num_threads or os.cpu_count() or 1)
    device, amp = resolve_device(cfg.runtime.device), cfg.runtime.amp
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else describe_cpu()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}: {where}")
    image, boxes, classes = annotated_image(cfg.image, cfg.ann_file)
    r = run_benchmark(image=image, boxes=boxes, classes=classes, min_size=cfg.min_size, max_size=cfg.max_size,
                      rounds=cfg.rounds, warmup=cfg.warmup, amp=amp, device=device)
    large = None
    if cfg.large.rounds > 0:
        large = run_large_inference(image=read_image_file(cfg.large.image), min_size=cfg.large.min_size,
                                    max_size=cfg.large.max_size, rounds=cfg.large.rounds, warmup=cfg.warmup,
                                    device=device, proposals=cfg.large.proposals)
    fpn = None
    if cfg.fpn.rounds > 0:
        fpn_image = annotated_image(cfg.fpn.image, cfg.ann_file)
        fpn = run_fpn_benchmark(image=fpn_image[0], boxes=fpn_image[1], classes=fpn_image[2], min_size=cfg.fpn.min_size,
                                max_size=cfg.fpn.max_size, rounds=cfg.fpn.rounds, warmup=cfg.warmup,
                                c4_proposals=cfg.fpn.c4_proposals, device=device)
    print_tables(r, large, amp)
    if fpn is not None:
        print_fpn(fpn)
    if cfg.runtime.output_dir:
        os.makedirs(cfg.runtime.output_dir, exist_ok=True)
        report = {**r, "large": large, "fpn": fpn, "min_size": cfg.min_size, "threads": torch.get_num_threads(),
                  "amp": amp, "device": where}
        atomic_write_text(json.dumps(report, indent=2), os.path.join(cfg.runtime.output_dir, "benchmark.json"))
    print_ratio_lines(r, large, device)
    if fpn is not None:
        print_fpn_ratio_lines(fpn)
    return {**r, "large": large, "fpn": fpn}


def print_tables(r: dict, large: dict | None, amp: bool | str) -> None:
    print(f"R50-C4 ({amp_dtype(amp) or 'fp32'}){'':<8}{'detectres':>12}{'torchvision':>13}")
    print(f"{'train s/iter':<22}{r['train_detectres']:>12.3f}{r['train_torchvision']:>13.3f}")
    print(f"{'inference s/img':<22}{r['inference_detectres']:>12.3f}{r['inference_torchvision']:>13.3f}")
    if large is None:
        return
    print(f"R101-C4 inference s/img at {large['input'][0]}x{large['input'][1]}: torchvision fp32 "
          f"{large['torchvision_fp32']:.3f}")
    for m in ("fp32", "bf16"):
        if f"detectres_{m}" in large:
            st = large[f"stages_{m}"]
            print(f"  detectres {m}: {large[f'detectres_{m}']:.3f} (backbone {st['backbone']:.3f}, "
                  f"rpn {st['rpn']:.3f}, roi_heads {st['roi_heads']:.3f})")


def print_ratio_lines(r: dict, large: dict | None, device: str) -> None:
    print(f"train ratio detectres/torchvision: {r['train_ratio']:.2f}")
    print(f"inference ratio detectres/torchvision: {r['inference_ratio']:.2f}")
    if large is None:
        return
    print(f"inference ratio fp32 detectres/torchvision: {large['ratio_fp32']:.2f}")
    if "ratio_bf16" in large:
        print(f"inference ratio bf16 detectres/torchvision: {large['ratio_bf16']:.2f}")
    else:
        print(f"bf16: not supported by this {'GPU' if device.startswith('cuda') else 'CPU'}")


def write_video(path: str, frames: int, size=(1280, 720), fps: float = 30.0) -> None:
    """A synthetic street-like video: coloured boxes moving over a smooth background."""
    rng = np.random.default_rng(0)
    background = cv2.resize(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8), size, interpolation=cv2.INTER_CUBIC)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        img = background.copy()
        for k in range(6):
            x = int((i * (3 + k) + 200 * k) % (size[0] - 160))
            cv2.rectangle(img, (x, 80 + 100 * k), (x + 120, 160 + 100 * k), (40 * k, 200, 255 - 40 * k), -1)
        writer.write(img)
    writer.release()


def write_demo_benchmark_inputs(out: str, frames: int) -> None:
    """An R101-C4 checkpoint with the fixture's deterministic weights and a 720p video, in ``out``."""
    os.makedirs(out, exist_ok=True)
    cfg = compose_config("train", ["model=r101_c4", "data=coco"])
    model = build_model(cfg.model, num_classes=80)
    init_weights(model, seed=0)
    state = {"model": model.state_dict(), "config": checkpoint_config(cfg), "class_names": list(COCO_CLASSES)}
    atomic_torch_save(state, os.path.join(out, "r101_c4_random.pth"))
    write_video(os.path.join(out, "street_720p.mp4"), frames)
    print(f"wrote {out}/r101_c4_random.pth and {out}/street_720p.mp4 ({frames} frames, 1280x720)")
