"""Export: the TorchScript and ONNX files of a checkpoint's detector (C4 and FPN) give eager PyTorch's
detections (same classes, IoU >= 0.99, scores within 1e-3) at three image sizes; what does not export
says so."""
import json
import os

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from detectres.apps.export import export, run_onnx
from detectres.modeling.export import ExportableDetector, NotExportableError
from detectres.predictor import Detector

SIZES = [(96, 128), (150, 200), (192, 256)]  # none of them the traced example's size


@pytest.fixture(scope="module", params=["c4", "fpn"])
def exported(request, tmp_path_factory):
    """The quickstart (C4) and the quickstart FPN (inputs padded to /32 inside the exported graph)."""
    trained = request.getfixturevalue("tiny_trained" if request.param == "c4" else "tiny_trained_fpn")
    checkpoint = os.path.join(trained, "model_final.pth")
    paths = export(checkpoint, str(tmp_path_factory.mktemp("export")))
    return Detector.from_checkpoint(checkpoint, device="cpu"), paths


def images():
    rng = np.random.default_rng(0)
    for h, w in SIZES:
        image = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
        image[:, h // 4: h // 2, w // 4: w // 2] = 255  # something box-like to detect
        yield image


def assert_same_detections(ref: dict, boxes, scores, classes):
    boxes, scores, classes = (torch.as_tensor(np.asarray(v)) for v in (boxes, scores, classes))
    assert len(ref["scores"]) > 0 and len(scores) == len(ref["scores"])
    iou = box_iou(ref["pred_boxes"], boxes.float())
    ok = ((ref["pred_classes"][:, None] == classes[None].long()) & (iou >= 0.99)
          & ((ref["scores"][:, None] - scores[None].float()).abs() <= 1e-3))
    assert ok.any(dim=1).all(), f"{int((~ok.any(dim=1)).sum())} of {len(ok)} detections unmatched"


@torch.no_grad()
def test_onnx_runtime_matches_eager_at_three_sizes(exported):
    detector, paths = exported
    for image in images():
        ref = detector.model.inference([{"image": torch.from_numpy(image)}])[0]
        assert_same_detections(ref, *run_onnx(paths["onnx"], image))


@torch.no_grad()
def test_torchscript_matches_eager_at_three_sizes(exported):
    detector, paths = exported
    scripted = torch.jit.load(paths["torchscript"])
    for image in images():
        ref = detector.model.inference([{"image": torch.from_numpy(image)}])[0]
        assert_same_detections(ref, *scripted(torch.from_numpy(image)))


def test_export_json_says_what_goes_in_and_out(exported):
    detector, paths = exported
    info = json.load(open(paths["info"]))
    assert info["class_names"] == detector.class_names and info["resize"]["min_size"] == detector.min_size
    assert info["files"] == {"torchscript": "model.ts", "onnx": "model.onnx"}


def test_what_does_not_export_says_so(exported):
    from detectres.config import compose_config
    from detectres.modeling.build import build_model

    with pytest.raises(NotExportableError, match="global-context"):
        ExportableDetector(build_model(compose_config("train", ["model=quickstart", "model.roi_heads.context=shared"]).model,
                                       num_classes=3))
    with pytest.raises(NotExportableError, match="test-time procedures and ensembles"):
        ExportableDetector(torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="unknown export format"):
        export(exported[1]["info"], "unused", ("tflite",))
