"""The prediction API: ``Detector.from_config(...).predict(bgr_image)``."""
from __future__ import annotations

import os

import cv2
import numpy as np
import torch
from omegaconf import DictConfig

from detectres.config import build_model, compose_config, merge_dotlist, resolve_device
from detectres.data.image_io import read_image_file
from detectres.data.transforms import resize_shortest_edge
from detectres.utils.video import list_images
from detectres.utils.visualizer import draw_detections
from detectres.weights.loading import Weights, load_weights_into, read_weights


class Detector:
    """A model in eval mode plus its test-time resize and class names.

    ``predict`` takes one HxWx3 uint8 BGR image (as ``cv2.imread`` gives) and returns numpy
    ``boxes`` (N, 4) XYXY in the image's own pixels, ``scores`` (N,), ``labels`` (N,) in 0..K-1
    and ``class_names`` (N names, one per detection), highest score first.
    """

    def __init__(self, model: torch.nn.Module, *, class_names: list[str], min_size: int, max_size: int,
                 interpolation: str = "bilinear", amp: bool = False, amp_dtype: torch.dtype = torch.bfloat16):
        if len(class_names) != model.num_classes:
            raise ValueError(f"{len(class_names)} class names for a model with {model.num_classes} classes")
        self.model = model.eval()
        self.class_names = list(class_names)
        self.min_size = int(min_size)
        self.max_size = int(max_size)
        self.interpolation = interpolation
        self.amp = amp
        self.amp_dtype = amp_dtype
        self.config: DictConfig | None = None  # set when built from a checkpoint

    @classmethod
    def from_config(cls, name_or_cfg: str | DictConfig = "quickstart", weights: str | Weights | None = None,
                    overrides: list[str] | tuple[str, ...] = (), device: str = "auto",
                    class_names: list[str] | None = None) -> "Detector":
        """Build from a model config name (``configs/model/NAME.yaml``) or a composed config, and load
        ``weights`` (a path in any supported format, or already-read :class:`Weights`).

        Class names come from ``class_names``, else the weights file, else the config's dataset.
        """
        if isinstance(name_or_cfg, str):
            cfg = compose_config("train", [f"model={name_or_cfg}", *overrides])
        else:
            cfg = merge_dotlist(name_or_cfg, overrides)
        loaded = read_weights(weights) if isinstance(weights, str) else weights
        if class_names is None:
            class_names = (loaded.class_names if loaded else None) or dataset_class_names(cfg)
        model = build_model(cfg.model, num_classes=len(class_names))
        if loaded is not None:
            load_weights_into(model, loaded, source=weights if isinstance(weights, str) else "weights")
        model.to(resolve_device(device))
        return cls(model, class_names=class_names, min_size=cfg.input.min_size_test,
                   max_size=cfg.input.max_size_test, interpolation=cfg.input.get("interpolation", "bilinear"),
                   amp=bool(cfg.get("amp", False)))

    @classmethod
    def from_checkpoint(cls, path: str, overrides: list[str] | tuple[str, ...] = (),
                        device: str = "auto") -> "Detector":
        """Rebuild exactly the model a detectres training run saved (config and classes inside)."""
        weights = read_weights(path)
        if not weights.config:
            raise ValueError(f"{path} carries no config; use Detector.from_config(name, weights=path)")
        cfg = merge_dotlist(weights.config, overrides)
        detector = cls.from_config(cfg, weights=weights, device=device, class_names=weights.class_names)
        detector.config = cfg
        return detector

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> dict:
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
    def predict_prepared(self, inputs: dict) -> dict:
        """Run the model on a ``prepare``d input; numpy outputs in the original image's pixels."""
        device_type = self.model.pixel_mean.device.type
        with torch.autocast(device_type, dtype=self.amp_dtype, enabled=self.amp):
            out = self.model([inputs])[0]
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


def dataset_class_names(cfg: DictConfig) -> list[str]:
    """Class names from the config: ``data.class_names`` if given, else the training annotation file."""
    names = cfg.data.get("class_names")
    if names:
        return list(names)
    from detectres.data.build import prepare_data
    from detectres.data.datasets.coco import read_coco_json
    from detectres.data.records import check_categories

    prepare_data(cfg.data)
    ann_file = cfg.data.train.ann_file
    return [c["name"] for c in check_categories(read_coco_json(ann_file).get("categories"), ann_file)]


def validation_image_folder(val_cfg: DictConfig) -> str:
    """The folder of the validation images: ``image_dir`` (COCO format) or the first image set's
    ``JPEGImages`` (VOC layout)."""
    if val_cfg.get("image_dir"):
        return val_cfg.image_dir
    return os.path.join(val_cfg.root, val_cfg.image_sets[0].split("/")[0], "JPEGImages")


def predict_to_files(checkpoint: str, input_path: str | None, output_dir: str | None, *,
                     score_thresh: float = 0.5, max_images: int = 8, device: str = "auto") -> list[str]:
    """Draw the detections of ``checkpoint`` on each input image; returns the written paths.

    ``input_path`` None means the validation images of the data the checkpoint was trained on.
    """
    detector = Detector.from_checkpoint(checkpoint, device=device)
    if input_path is None:
        input_path = validation_image_folder(detector.config.data.val)
    output_dir = output_dir or os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "predictions")
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for path in list_images(input_path, max_images):
        image = read_image_file(path)
        prediction = detector.predict(image)
        out_path = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + ".jpg")
        cv2.imwrite(out_path, detector.draw(image, prediction, score_thresh))
        kept = int((prediction["scores"] >= score_thresh).sum())
        print(f"{path}: {kept} detections with score >= {score_thresh} -> {out_path}")
        written.append(out_path)
    return written
