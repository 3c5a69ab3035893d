"""Export a checkpoint's detector (``tools/export.py``, ``detectres-export``): TorchScript, ONNX and
OpenVINO IR files of :class:`~detectres.modeling.export.ExportableDetector`, with dynamic image size, and
``export.json`` saying what goes in and out; an export folder runs in ``test_net``, ``predict`` and the demo
(``checkpoint=FOLDER``).

OpenVINO precision: fp32 (real fp32), bf16 (the IR in fp32, run in bf16 where the CPU has it natively) or
int8 (post-training quantization with NNCF on calibration images: a folder, or ``val``/``train`` for the
checkpoint's own split; only convolutions and matrix products are quantized: box decoding and NMS stay in
float).

Input: (3, H, W) uint8 BGR, resized by the caller with the checkpoint's test resize (shortest edge
``min_size`` up to ``max_size``, given in export.json); normalisation is inside. Outputs: ``boxes``
(D, 4) XYXY in the input's pixels, ``scores`` (D,), ``classes`` (D,). The test-time add-ons,
ensembles do not export (a clear error names them).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import warnings

import numpy as np
import torch

from detectres.apps.predict import validation_image_folder
from detectres.config import DATA_DIR
from detectres.data.image_io import list_images, read_image_file
from detectres.modeling.deployed import ENGINES, engine_module
from detectres.modeling.export import ExportableDetector
from detectres.predictor import Detector
from detectres.utils.file_io import atomic_write, atomic_write_text, file_mode, temp_file
from detectres.weights.loading import read_raw

FORMATS = ("torchscript", "onnx", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
SAMPLE = os.path.join(DATA_DIR, "shapes8", "val", "000000.png")  # shipped in the wheel too
ONNX_AXES = {"image": {1: "height", 2: "width"}, "boxes": {0: "detections"}, "scores": {0: "detections"},
             "classes": {0: "detections"}}


@torch.no_grad()
def export(checkpoint: str, output_dir: str, formats: tuple[str, ...] = ("torchscript", "onnx"), opset: int = 17,
           *, precision: str = "fp32", calibration: str | None = None, calibration_size: int = 32) -> dict[str, str]:
    """Write the files of ``formats`` and export.json into ``output_dir``; returns their paths."""
    formats = check_request(formats, precision)
    detector = Detector.from_checkpoint(checkpoint, device="cpu")
    images = calibration_inputs(detector, calibration, calibration_size) if precision == "int8" else None
    # the recipe, literal data as the checkpoint stores it: test_net on the folder evaluates on its data
    return export_detector(detector, output_dir, formats, opset, precision=precision, calibration=images,
                           source=os.path.abspath(checkpoint), config=read_raw(checkpoint).get("config"))


def check_request(formats: tuple[str, ...], precision: str) -> tuple[str, ...]:
    """The formats asked for (``all``: every one), refused in one line before any work when they cannot be made."""
    formats = FORMATS if tuple(formats) == ("all",) else tuple(formats)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; choose from {', '.join(FORMATS)} or all")
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision}: choose from {', '.join(PRECISIONS)}")
    if precision != "fp32" and "openvino" not in formats:
        raise ValueError(f"--precision {precision} is an OpenVINO precision: add openvino to --formats")
    if "openvino" in formats:
        engine_module("openvino")  # a missing engine stops here
    return formats


@torch.no_grad()
def export_detector(detector: Detector, output_dir: str, formats: tuple[str, ...], opset: int = 17, *,
                    precision: str = "fp32", calibration: list[np.ndarray] | None = None, source: str | None = None,
                    config: dict | None = None) -> dict[str, str]:
    """The files of ``formats`` for ``detector`` (OpenVINO INT8 quantized on the prepared ``calibration``
    inputs) and export.json, which carries ``config`` (a stored recipe) for the tools that run the folder."""
    example = detector.prepare(read_image_file(SAMPLE))["image"]  # traced once; any size runs afterwards
    paths = write_model_files(detector.model, example, output_dir, tuple(f for f in formats if f != "openvino"), opset)
    if "openvino" in formats:
        paths["openvino"] = write_openvino(detector.model, example, output_dir, opset, calibration)
    info = {"checkpoint": source, "files": {k: os.path.basename(v) for k, v in paths.items()}, "precision": precision,
            "input": "image: (3, H, W) uint8 BGR, resized with the shortest-edge rule below",
            "resize": {"min_size": detector.min_size, "max_size": detector.max_size,
                       "interpolation": detector.interpolation},
            "outputs": ["boxes (D, 4) XYXY in input pixels", "scores (D,)", "classes (D,) in 0..K-1"],
            "class_names": detector.class_names, "config": config}
    paths["info"] = os.path.join(output_dir, "export.json")
    atomic_write_text(json.dumps(info, indent=2), paths["info"])
    return paths


@torch.no_grad()
def write_model_files(model: torch.nn.Module, example: torch.Tensor, output_dir: str,
                      formats: tuple[str, ...] = ("torchscript", "onnx"), opset: int = 17) -> dict[str, str]:
    """Trace ``model.inference`` (:class:`ExportableDetector`) on ``example`` and write model.ts / model.onnx
    (each atomically: a failed or interrupted export leaves no file at either name)."""
    wrapper = ExportableDetector(model)
    os.makedirs(output_dir, exist_ok=True)
    paths = {}
    if "torchscript" in formats:
        paths["torchscript"] = os.path.join(output_dir, "model.ts")
        with quiet_tracing():
            traced = torch.jit.trace(wrapper, (example,), check_trace=False)
            atomic_write(paths["torchscript"], lambda f: torch.jit.save(traced, f), binary=True, suffix=".ts")
    if "onnx" in formats:
        paths["onnx"] = os.path.join(output_dir, "model.onnx")
        atomic_write(paths["onnx"], lambda f: write_onnx(wrapper, example, f, opset), binary=True, suffix=".onnx")
    return paths


@contextlib.contextmanager
def quiet_tracing():
    """The tracer warns about Python-side sizes (e.g. how many RoIs there are) that only steer the choice of
    fast paths; the graph keeps every size dynamic (tests run the files at several sizes). torch 2.9+ also
    announces that TorchScript is deprecated at each jit call: the files are still written and read by the
    torch versions setup.py accepts; the README says so once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*(legacy TorchScript-based ONNX|will be removed)")
        yield


@torch.no_grad()
def write_onnx(wrapper: ExportableDetector, example: torch.Tensor, f, opset: int) -> None:
    """The ONNX graph of ``wrapper`` traced on ``example`` into ``f`` (a path or a binary file)."""
    with quiet_tracing():
        torch.onnx.export(wrapper, (example,), f, input_names=["image"], output_names=["boxes", "scores", "classes"],
                          dynamic_axes=ONNX_AXES, opset_version=opset, dynamo=False)


def calibration_inputs(detector: Detector, source: str | None, count: int) -> list[np.ndarray]:
    """Up to ``count`` images of ``source`` (a folder, or ``val``/``train``: the checkpoint's own split),
    resized as the detector resizes them: what INT8 quantization measures its activation ranges on."""
    if source is None:
        raise ValueError("--precision int8 needs --calibration: a folder of images like those the model will "
                         "see, or val / train for the checkpoint's own split")
    if source in ("val", "train"):
        split = detector.config.data[source]
        source = validation_image_folder(split) if source == "val" else split.image_dir
    files = list_images(source, count)
    return [detector.prepare(read_image_file(f))["image"].numpy() for f in files]


def write_openvino(model: torch.nn.Module, example: torch.Tensor, output_dir: str, opset: int,
                   calibration: list[np.ndarray] | None) -> str:
    """The OpenVINO IR (model.xml + model.bin, weights kept in fp32) converted from the traced ONNX graph;
    with ``calibration`` images, quantized to INT8 by NNCF, keeping box decoding and NMS in float."""
    import openvino as ov

    os.makedirs(output_dir, exist_ok=True)
    fd, onnx_tmp = temp_file(os.path.join(output_dir, "model.onnx"), suffix=".onnx")
    os.close(fd)
    try:
        write_onnx(ExportableDetector(model), example, onnx_tmp, opset)
        ir = ov.convert_model(onnx_tmp)
    finally:
        os.remove(onnx_tmp)
    if calibration is not None:
        ir = quantize_int8(ir, calibration)
    xml = os.path.join(output_dir, "model.xml")
    fd, tmp_xml = temp_file(xml, suffix=".xml")
    os.close(fd)
    tmp_bin = tmp_xml[:-4] + ".bin"
    try:
        ov.save_model(ir, tmp_xml, compress_to_fp16=False)
        for made in (tmp_xml, tmp_bin):
            os.chmod(made, file_mode())
        os.replace(tmp_bin, xml[:-4] + ".bin")  # the .bin first: an .xml never names a missing .bin
        os.replace(tmp_xml, xml)
    finally:
        for leftover in (tmp_xml, tmp_bin):
            if os.path.exists(leftover):
                os.remove(leftover)
    return xml


# INT8 quantizes the inputs and weights of every convolution and matrix product. Everything else stays in
# float: NNCF would otherwise also put quantizers on element-wise arithmetic, which here is box decoding
# (a quantized Multiply/Add/Exp there moved the quickstart's boxes by about a pixel and cost it 4.5 AP), and
# on the ops that select boxes. Measured on the quickstart: box AP 68.87 in fp32, 68.84 with every weighted
# layer quantized, 68.91 with the detection layers (RPN outputs, box predictor) kept in float as well.
FLOAT_TYPES = ["Add", "Multiply", "Subtract", "Divide", "Exp", "Gather", "Slice", "Minimum", "Maximum", "Clamp",
               "Concat", "Sigmoid", "Softmax", "NonMaxSuppression", "ROIAlign", "TopK"]


def quantize_int8(ir, calibration: list[np.ndarray], keep_float: list[str] = ()):
    """NNCF post-training quantization (8-bit weights and activations) of the convolutions and matrix
    products, except the layers whose names match a pattern of ``keep_float``."""
    import nncf

    logging.getLogger("nncf").setLevel(logging.WARNING)  # its per-layer INFO lines would bury the tool's own
    ignored = nncf.IgnoredScope(patterns=list(keep_float), types=FLOAT_TYPES, validate=False)
    return nncf.quantize(ir, nncf.Dataset(calibration), subset_size=len(calibration), ignored_scope=ignored,
                         preset=nncf.QuantizationPreset.MIXED)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("checkpoint", help="a detectres checkpoint (model_final.pth)")
    p.add_argument("output_dir")
    p.add_argument("--formats", default="torchscript,onnx", help="comma-separated: torchscript, onnx, openvino; or all")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="of the OpenVINO model")
    p.add_argument("--calibration", default=None, help="int8: a folder of images, or val / train (the checkpoint's split)")
    p.add_argument("--calibration-size", type=int, default=32, help="int8: how many calibration images")
    a = p.parse_args(argv)
    for kind, path in export(a.checkpoint, a.output_dir, tuple(a.formats.split(",")), precision=a.precision,
                             calibration=a.calibration, calibration_size=a.calibration_size).items():
        print(f"{kind}: {path}")
    return 0


def run_onnx(path: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run an exported ONNX file in ONNX Runtime on one (3, H, W) uint8 input."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return tuple(session.run(None, {"image": image}))
