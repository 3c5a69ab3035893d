"""The prediction API: ``Detector.from_checkpoint(path).predict(bgr_image)``, or ``Detector.from_zoo(name)``."""
from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig

from detectres.config import compose_config
from detectres.utils.amp import autocast_context
from detectres.utils.resize import resize_shortest_edge
from detectres.utils.visualizer import draw_detections
from detectres.modeling.deployed import is_export_dir
from detectres.weights.restore import RestoredModel, choice_overrides, require_weights, restore_model
from detectres.weights.zoo import ZOO_PREFIX, zoo_entry


class Detector:
    """A model in eval mode plus its test-time resize, precision and class names.

    ``predict`` takes one HxWx3 uint8 BGR image (as ``cv2.imread`` gives) and returns numpy
    ``boxes`` (N, 4) XYXY in the image's own pixels, ``scores`` (N,), ``labels`` (N,) in 0..K-1
    and ``class_names`` (N names, one per detection), highest score first.
    """

    def __init__(self, model: torch.nn.Module, *, class_names: list[str], min_size: int, max_size: int,
                 interpolation: str = "bilinear", amp: bool | str = False):
        if len(class_names) != model.num_classes:
            raise ValueError(f"{len(class_names)} class names for a model with {model.num_classes} classes")
        self.model = model.eval()
        self.class_names = list(class_names)
        self.min_size = int(min_size)
        self.max_size = int(max_size)
        self.interpolation = interpolation
        self.amp = amp
        self.config: DictConfig | None = None  # the recipe the model was restored from

    @classmethod
    def from_restored(cls, restored: RestoredModel) -> "Detector":
        """Wrap a restored model with the test-time settings of its config (``input``, ``runtime.amp``)."""
        cfg = restored.config
        detector = cls(restored.model, class_names=restored.class_names, min_size=cfg.input.min_size_test,
                       max_size=cfg.input.max_size_test, interpolation=cfg.input.interpolation, amp=cfg.runtime.amp)
        detector.config = cfg
        return detector

    @classmethod
    def from_app_config(cls, cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> "Detector":
        """From a tool's composed config: ``checkpoint=PATH``, or ``model=NAME model.weights=PATH``."""
        require_weights(cfg, "run")
        return cls.from_restored(restore_model(cfg, overrides, checkpoint=cfg.checkpoint))

    @classmethod
    def from_checkpoint(cls, path: str, overrides: list[str] | tuple[str, ...] = (),
                        device: str = "auto") -> "Detector":
        """Rebuild exactly the model a detectres training run saved (config and classes inside);
        ``overrides`` (``key=value``) change it, e.g. ``model.roi_heads.score_thresh=0.3``."""
        overrides = [*choice_overrides(path, overrides), f"runtime.device={device}", *overrides]
        return cls.from_restored(restore_model(compose_config("predict", overrides), overrides, checkpoint=path))

    @classmethod
    def from_export(cls, folder: str, overrides: list[str] | tuple[str, ...] = ()) -> "Detector":
        """An export folder (``tools/export.py``) run by its engine (OpenVINO where it holds an IR, else ONNX
        Runtime) on the CPU, with its class names, resize and recipe from ``export.json``; ``overrides``
        may change the tool's keys, not the model's (its graph is fixed)."""
        if not is_export_dir(folder):
            raise FileNotFoundError(f"{folder}: not an export folder (no export.json); tools/export.py writes one")
        return cls.from_checkpoint(folder, overrides)

    @classmethod
    def from_config(cls, name: str = "quickstart", weights: str | None = None,
                    overrides: list[str] | tuple[str, ...] = (), device: str = "auto",
                    class_names: list[str] | None = None) -> "Detector":
        """Build ``configs/model/NAME.yaml`` and load ``weights`` (a path in any supported format).
        Class names come from ``class_names``, else the weights file, else the config's dataset."""
        cfg = compose_config("predict", [f"model={name}", f"runtime.device={device}", *overrides])
        if weights is not None:
            cfg.model.weights = weights
        return cls.from_restored(restore_model(cfg, class_names=class_names))

    @classmethod
    def from_zoo(cls, name: str, overrides: list[str] | tuple[str, ...] = (), device: str = "auto",
                 class_names: list[str] | None = None) -> "Detector":
        """Build the model zoo entry ``name``'s model config and load its weights (``model.weights=zoo:NAME``:
        downloaded once into the cache, see :mod:`detectres.weights.zoo`); ``overrides`` apply on top."""
        entry = zoo_entry(name)
        return cls.from_config(entry.config, weights=f"{ZOO_PREFIX}{entry.name}",
                               overrides=[*entry.overrides, *overrides], device=device, class_names=class_names)

    @torch.no_grad()
    def predict(self, image: np.ndarray | list[np.ndarray]) -> dict | list[dict]:
        """Detections for one image, or for a list of images run as one batch (a list of results)."""
        if isinstance(image, (list, tuple)):
            return self.predict_prepared([self.prepare(x) for x in image])
        return self.predict_prepared(self.prepare(image))

    def prepare(self, image: np.ndarray) -> dict:
        """The CPU half of ``predict``: check and resize one image into a model input (the demo runs
        it in its reader thread, ahead of the model)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            got = f"{type(image).__name__} {getattr(image, 'shape', '')} {getattr(image, 'dtype', '')}"
            raise ValueError(f"predict expects an HxWx3 uint8 BGR numpy array, got {got}")
        h, w = image.shape[:2]
        resized = resize_shortest_edge(image, self.min_size, self.max_size, self.interpolation)
        tensor = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        return {"image": tensor, "height": h, "width": w}

    @torch.no_grad()
    def predict_prepared(self, inputs: dict | list[dict]) -> dict | list[dict]:
        """Run the model on ``prepare``d input(s), one batch; numpy outputs in each image's own pixels."""
        batch = inputs if isinstance(inputs, list) else [inputs]
        with autocast_context(self.model, self.amp):
            outputs = [self.to_numpy(out) for out in self.model.inference(batch)]
        return outputs if isinstance(inputs, list) else outputs[0]

    def to_numpy(self, out: dict) -> dict:
        labels = out["pred_classes"].cpu().numpy()
        return {
            "boxes": out["pred_boxes"].float().cpu().numpy(),
            "scores": out["scores"].float().cpu().numpy(),
            "labels": labels,
            "class_names": [self.class_names[i] for i in labels],
        }

    def draw(self, image: np.ndarray, prediction: dict | None = None, score_thresh: float = 0.5) -> np.ndarray:
        """The image with detections drawn (predicts first unless ``prediction`` is given)."""
        p = prediction if prediction is not None else self.predict(image)
        return draw_detections(image, p["boxes"], p["scores"], p["labels"], self.class_names, score_thresh)
