"""Export a checkpoint's detector (``tools/export.py``, ``detectres-export``): a TorchScript file and an
ONNX file of :class:`~detectres.modeling.export.ExportableDetector`, with dynamic image size, and
``export.json`` saying what goes in and out.

Input: (3, H, W) uint8 BGR, resized by the caller with the checkpoint's test resize (shortest edge
``min_size`` up to ``max_size``, given in export.json); normalisation is inside. Outputs: ``boxes``
(D, 4) XYXY in the input's pixels, ``scores`` (D,), ``classes`` (D,). The test-time add-ons,
ensembles do not export (a clear error names them).
"""
from __future__ import annotations

import argparse
import json
import os
import warnings

import numpy as np
import torch

from detectres.config import DATA_DIR
from detectres.data.image_io import read_image_file
from detectres.modeling.export import ExportableDetector
from detectres.predictor import Detector
from detectres.utils.file_io import atomic_write, atomic_write_text

FORMATS = ("torchscript", "onnx")
SAMPLE = os.path.join(DATA_DIR, "shapes8", "val", "000000.png")  # shipped in the wheel too
ONNX_AXES = {"image": {1: "height", 2: "width"}, "boxes": {0: "detections"}, "scores": {0: "detections"},
             "classes": {0: "detections"}}


@torch.no_grad()
def export(checkpoint: str, output_dir: str, formats: tuple[str, ...] = FORMATS, opset: int = 17) -> dict[str, str]:
    """Write the files of ``formats`` and export.json into ``output_dir``; returns their paths."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    detector = Detector.from_checkpoint(checkpoint, device="cpu")
    example = detector.prepare(read_image_file(SAMPLE))["image"]  # traced once; any size runs afterwards
    paths = write_model_files(detector.model, example, output_dir, formats, opset)
    info = {"checkpoint": os.path.abspath(checkpoint), "files": {k: os.path.basename(v) for k, v in paths.items()},
            "input": "image: (3, H, W) uint8 BGR, resized with the shortest-edge rule below",
            "resize": {"min_size": detector.min_size, "max_size": detector.max_size,
                       "interpolation": detector.interpolation},
            "outputs": ["boxes (D, 4) XYXY in input pixels", "scores (D,)", "classes (D,) in 0..K-1"],
            "class_names": detector.class_names}
    paths["info"] = os.path.join(output_dir, "export.json")
    atomic_write_text(json.dumps(info, indent=2), paths["info"])
    return paths


@torch.no_grad()
def write_model_files(model: torch.nn.Module, example: torch.Tensor, output_dir: str,
                      formats: tuple[str, ...] = FORMATS, opset: int = 17) -> dict[str, str]:
    """Trace ``model.inference`` (:class:`ExportableDetector`) on ``example`` and write model.ts / model.onnx
    (each atomically: a failed or interrupted export leaves no file at either name)."""
    wrapper = ExportableDetector(model)
    os.makedirs(output_dir, exist_ok=True)
    paths = {}
    # The tracer warns about Python-side sizes (e.g. how many RoIs there are) that only steer the
    # choice of fast paths; the graph keeps every size dynamic (tests run the files at several sizes).
    # torch 2.9+ also announces that TorchScript is deprecated (FutureWarning) at each jit call: the file is
    # still written and read by the torch versions setup.py accepts; the README says so once
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        if "torchscript" in formats:
            paths["torchscript"] = os.path.join(output_dir, "model.ts")
            traced = torch.jit.trace(wrapper, (example,), check_trace=False)
            atomic_write(paths["torchscript"], lambda f: torch.jit.save(traced, f), binary=True, suffix=".ts")
        if "onnx" in formats:
            paths["onnx"] = os.path.join(output_dir, "model.onnx")
            atomic_write(paths["onnx"], lambda f: torch.onnx.export(
                wrapper, (example,), f, input_names=["image"], output_names=["boxes", "scores", "classes"],
                dynamic_axes=ONNX_AXES, opset_version=opset, dynamo=False), binary=True, suffix=".onnx")
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("checkpoint", help="a detectres checkpoint (model_final.pth)")
    p.add_argument("output_dir")
    p.add_argument("--formats", default="torchscript,onnx", help="comma-separated: torchscript, onnx")
    a = p.parse_args(argv)
    for kind, path in export(a.checkpoint, a.output_dir, tuple(a.formats.split(","))).items():
        print(f"{kind}: {path}")
    return 0


def run_onnx(path: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run an exported ONNX file in ONNX Runtime on one (3, H, W) uint8 input."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return tuple(session.run(None, {"image": image}))
