"""Deployment benchmark (``tools/deploy_benchmark.py``, ``detectres-deploy-benchmark``): R50-FPN and R101-C4 at
800 px, end to end (the resize, the model and the boxes mapped back, from an HxWx3 image to numpy
detections), run by detectres eager fp32 and bf16 (where the CPU has it natively), ONNX Runtime fp32 and
OpenVINO fp32, bf16 and INT8, interleaved in one run; prints ``deploy ratio <engine>/<eager fp32>`` lines
and how far each engine's detections are from eager fp32's.

The models carry the Detectron2 fixture's deterministic weights (``init_weights``: every proposal and
detection a real box); INT8 is calibrated on the sample photos of the checkout's tests/data.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import torch
from torchvision.ops import box_iou

from detectres.apps.benchmark_models import init_weights
from detectres.apps.export import export
from detectres.config import DATA_DIR, checkpoint_config, compose_config
from detectres.data.coco_names import COCO_CLASSES
from detectres.data.image_io import list_images, read_image_file
from detectres.modeling.build import build_model
from detectres.modeling.deployed import DeployedDetector
from detectres.predictor import Detector
from detectres.utils.amp import cpu_runs_natively, describe_cpu
from detectres.utils.file_io import atomic_torch_save

MODELS = {"r50_fpn": "R50-FPN", "r101_c4": "R101-C4"}
IMAGE = os.path.join(DATA_DIR, "images", "bus.jpg")
CALIBRATION = [os.path.join(DATA_DIR, "coco8", split) for split in ("train", "val")]


def write_checkpoint(name: str, folder: str) -> str:
    """``name``'s model at 800 px with the fixture's deterministic weights, as a detectres checkpoint."""
    cfg = compose_config("train", [f"model={name}", "data=coco"])
    model = build_model(cfg.model, num_classes=80)
    init_weights(model, seed=0)
    path = os.path.join(folder, f"{name}.pth")
    atomic_torch_save({"model": model.state_dict(), "config": checkpoint_config(cfg),
                       "class_names": list(COCO_CLASSES)}, path)
    return path


def calibration_folder(folder: str) -> str:
    """The sample photos in one folder (links), for INT8 calibration."""
    os.makedirs(folder, exist_ok=True)
    for source in CALIBRATION:
        for f in list_images(source):
            link = os.path.join(folder, os.path.basename(f))
            if not os.path.exists(link):
                os.symlink(os.path.abspath(f), link)
    return folder


def detectors(name: str, work: str, threads: int) -> dict[str, Detector]:
    """Every engine's detector for model ``name``: eager fp32 (and bf16 where native), ONNX Runtime,
    OpenVINO fp32 / bf16 / INT8 (exported here once)."""
    checkpoint = write_checkpoint(name, work)
    calibration = calibration_folder(os.path.join(work, "calibration"))
    out = {"eager fp32": Detector.from_checkpoint(checkpoint, [f"runtime.num_threads={threads}"], device="cpu")}
    if cpu_runs_natively(torch.bfloat16):  # (emulated bf16 runs as fp32: nothing to compare)
        out["eager bf16"] = Detector.from_checkpoint(checkpoint, ["runtime.amp=bf16"], device="cpu")
    for precision in ("fp32", "bf16", "int8"):
        folder = os.path.join(work, f"{name}_{precision}")
        formats = ("onnx", "openvino") if precision == "fp32" else ("openvino",)
        start = time.perf_counter()
        export(checkpoint, folder, formats, precision=precision, calibration=calibration, calibration_size=16)
        print(f"{MODELS[name]}: exported OpenVINO {precision} in {time.perf_counter() - start:.1f} s")
        detector = Detector.from_export(folder)
        out[f"openvino {precision}"] = detector
        if precision == "fp32":  # the same folder's ONNX file, in ONNX Runtime
            out["onnxruntime fp32"] = Detector(DeployedDetector(folder, engine="onnxruntime", threads=threads),
                                               class_names=detector.class_names, min_size=detector.min_size,
                                               max_size=detector.max_size, interpolation=detector.interpolation)
    return out


def agreement(ref: dict, other: dict) -> str:
    """How many of eager fp32's detections the engine gives too (same class, IoU >= 0.9), and the largest
    score difference among those."""
    if len(ref["scores"]) == 0:
        return "no detections"
    iou = box_iou(torch.as_tensor(ref["boxes"]), torch.as_tensor(other["boxes"])) if len(other["scores"]) else None
    if iou is None:
        return f"0/{len(ref['scores'])} matched"
    same = (torch.as_tensor(ref["labels"])[:, None] == torch.as_tensor(other["labels"])[None]) & (iou >= 0.9)
    matched = same.any(dim=1)
    diffs = [abs(float(ref["scores"][i]) - float(other["scores"][same[i].nonzero()[0, 0]]))
             for i in range(len(matched)) if matched[i]]
    return f"{int(matched.sum())}/{len(matched)} matched, max score diff {max(diffs, default=0):.2e}"


def run(name: str, image: np.ndarray, work: str, rounds: int, threads: int) -> dict[str, float]:
    engines = detectors(name, work, threads)
    times: dict[str, list[float]] = {k: [] for k in engines}
    outputs = {k: d.predict(image) for k, d in engines.items()}  # warm-up, and the detections compared
    for _ in range(rounds):  # interleaved: every engine once per round
        for key, detector in engines.items():
            start = time.perf_counter()
            detector.predict(image)
            times[key].append(time.perf_counter() - start)
    best = {k: float(np.median(v)) for k, v in times.items()}
    for key in engines:
        print(f"{MODELS[name]:8s} {key:17s} {best[key]:7.3f} s/image   {agreement(outputs['eager fp32'], outputs[key])}")
    for key in engines:
        if key != "eager fp32":
            print(f"deploy ratio {MODELS[name]} {key}/eager fp32: {best[key] / best['eager fp32']:.2f}")
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--models", default="r50_fpn,r101_c4", help=f"comma-separated: {', '.join(MODELS)}")
    p.add_argument("--image", default=IMAGE)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--work", default=None, help="where the checkpoints and exports go (default: a temporary folder)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    image = read_image_file(a.image)
    print(f"{describe_cpu()}; torch {torch.__version__}, {a.threads} threads; image {a.image} "
          f"{image.shape[1]}x{image.shape[0]} resized to 800 px; median of {a.rounds} interleaved rounds")
    work = a.work or tempfile.mkdtemp(prefix="detectres-deploy-")
    try:
        for name in a.models.split(","):
            run(name, image, os.path.join(work, name), a.rounds, a.threads)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0
