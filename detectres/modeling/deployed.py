"""An exported detector run by an inference engine (OpenVINO or ONNX Runtime) behind the eager model's
interface: ``DeployedDetector.inference(batched_inputs)`` takes the same resized inputs and gives the same
per-image ``pred_boxes`` / ``scores`` / ``pred_classes`` in original pixels, so evaluation, prediction and
the demo run an export folder exactly as they run a checkpoint.

An export folder (``tools/export.py``) holds the engine files and ``export.json``: the input contract, the
resize, the class names and the checkpoint's stored recipe. The engines are optional dependencies: a
missing one is one line with the ``pip install`` that brings it.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import Tensor, nn

from detectres.modeling.postprocessing import detector_postprocess

INFO = "export.json"
MAX_INFO_BYTES = 16 << 20
# engine -> (the export.json "files" entry it runs, the module, the install line)
ENGINES = {"openvino": ("openvino", "openvino", 'pip install "detectres[openvino]"'),
           "onnxruntime": ("onnx", "onnxruntime", 'pip install "detectres[export]"')}
# OpenVINO's inference precision per export precision (an INT8 model keeps its float parts in fp32)
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


class ExportFolderError(ValueError):
    """An export folder that cannot be run (missing or unreadable files, no engine)."""


def is_export_dir(path: str | None) -> bool:
    return bool(path) and os.path.isdir(path) and os.path.isfile(os.path.join(path, INFO))


def read_export_info(folder: str) -> dict:
    """``export.json`` of ``folder``, checked for what running it needs (one line naming the problem)."""
    path = os.path.join(folder, INFO)
    size = os.path.getsize(path)
    if size > MAX_INFO_BYTES:  # a recipe and class names: a few MB at the stored-config limits
        raise ExportFolderError(f"{path}: {size} bytes, more than an export description holds "
                                f"(limit {MAX_INFO_BYTES}); not reading it")
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise ExportFolderError(f"{path}: not a readable export description ({type(e).__name__}: {e})") from None
    except RecursionError:
        raise ExportFolderError(f"{path}: nested too deeply to be an export description") from None
    if not isinstance(info, dict):
        raise ExportFolderError(f"{path}: expected a mapping (files, resize, class_names), got {type(info).__name__}")
    names, files, resize = info.get("class_names"), info.get("files"), info.get("resize")
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ExportFolderError(f"{path}: class_names must be a non-empty list of names")
    if not (isinstance(files, dict) and isinstance(resize, dict) and {"min_size", "max_size"} <= set(resize)):
        raise ExportFolderError(f"{path}: needs 'files' and 'resize' (min_size, max_size), as tools/export.py writes")
    return info


def pick_engine(info: dict, folder: str, engine: str | None = None) -> str:
    """``engine``, else OpenVINO where the folder has an IR, else ONNX Runtime."""
    files = info["files"]
    if engine is None:
        engine = next((e for e, (kind, _, _) in ENGINES.items() if kind in files), None)
        if engine is None:
            raise ExportFolderError(f"{folder} holds no file an engine runs (openvino or onnx; it has "
                                    f"{', '.join(files) or 'none'}): export with --formats openvino or onnx")
    if engine not in ENGINES:
        raise ExportFolderError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if ENGINES[engine][0] not in files:
        raise ExportFolderError(f"{folder} has no {ENGINES[engine][0]} file for {engine}")
    return engine


def engine_module(engine: str):
    """The engine's Python module, or one line saying how to install it."""
    _, module, install = ENGINES[engine]
    try:
        return __import__(module)
    except ImportError:
        raise ExportFolderError(f"running an export with {engine} needs the {module} package: {install}") from None


def openvino_runner(folder: str, info: dict, threads: int):
    """Compile the folder's IR for the CPU at the export's precision; returns image -> (boxes, scores, classes)."""
    ov = engine_module("openvino")
    xml = os.path.join(folder, info["files"]["openvino"])
    try:
        model = ov.Core().read_model(xml)
        config = {"INFERENCE_PRECISION_HINT": OV_PRECISION[info.get("precision", "fp32")],
                  "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        compiled = ov.Core().compile_model(model, "CPU", config)
    except Exception as e:  # OpenVINO raises its own RuntimeError for a corrupt .xml or .bin
        first = " ".join(str(e).split())[:300]
        raise ExportFolderError(f"{xml}: OpenVINO cannot load it ({first})") from None
    request = compiled.create_infer_request()

    def run(image: np.ndarray):
        out = request.infer([image])
        return tuple(out[o] for o in compiled.outputs)
    return run


def onnxruntime_runner(folder: str, info: dict, threads: int):
    ort = engine_module("onnxruntime")
    path = os.path.join(folder, info["files"]["onnx"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types
        raise ExportFolderError(f"{path}: ONNX Runtime cannot load it ({' '.join(str(e).split())[:300]})") from None
    return lambda image: tuple(session.run(None, {"image": image}))


RUNNERS = {"openvino": openvino_runner, "onnxruntime": onnxruntime_runner}


class DeployedDetector(nn.Module):
    """The export in ``folder`` run by ``engine`` (None: its OpenVINO IR, else its ONNX file) on the CPU."""

    def __init__(self, folder: str, *, engine: str | None = None, threads: int | None = None):
        super().__init__()
        self.folder = folder
        self.info = read_export_info(folder)
        self.engine = pick_engine(self.info, folder, engine)
        self.precision = self.info.get("precision", "fp32") if self.engine == "openvino" else "fp32"
        self.num_classes = len(self.info["class_names"])
        self.run_image = RUNNERS[self.engine](folder, self.info, int(threads or torch.get_num_threads()))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, batched_inputs: list[dict]):
        raise TypeError("an exported model has no training form: use .inference(...)")

    @torch.no_grad()
    def inference(self, batched_inputs: list[dict]) -> list[dict[str, Tensor]]:
        """Per image ``pred_boxes`` (D, 4) in original pixels, ``scores`` (D,), ``pred_classes`` (D,)."""
        results = []
        for x in batched_inputs:
            image = x["image"].cpu().numpy()
            boxes, scores, classes = self.run_image(np.ascontiguousarray(image))
            result = {"pred_boxes": torch.from_numpy(np.asarray(boxes, np.float32)).reshape(-1, 4),
                      "scores": torch.from_numpy(np.asarray(scores, np.float32)).reshape(-1),
                      "pred_classes": torch.from_numpy(np.asarray(classes).astype(np.int64)).reshape(-1)}
            results.append(detector_postprocess(result, x, tuple(image.shape[1:])))
        return results
