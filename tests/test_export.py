"""Export: the TorchScript and ONNX files of a checkpoint's detector (C4 and FPN) give eager PyTorch's
detections (same classes, IoU >= 0.99, scores within 1e-3) at three image sizes; what does not export
says so."""
import json
import os

import pytest
import torch
from export_checks import assert_same_detections, images

from detectres.apps.export import export, run_onnx, write_model_files
from detectres.modeling.export import ExportableDetector, NotExportableError
from detectres.predictor import Detector


@pytest.fixture(scope="module", params=["c4", "fpn"])
def exported(request, tmp_path_factory):
    """The quickstart (C4) and the quickstart FPN (inputs padded to /32 inside the exported graph)."""
    trained = request.getfixturevalue("tiny_trained" if request.param == "c4" else "tiny_trained_fpn")
    checkpoint = os.path.join(trained, "model_final.pth")
    paths = export(checkpoint, str(tmp_path_factory.mktemp("export")))
    return Detector.from_checkpoint(checkpoint, device="cpu"), paths


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


@torch.no_grad()
def test_the_global_context_head_exports_too(tmp_path):
    """The paper's global context (a whole-image box per image, run through res5) traces like the rest:
    the files give eager detections at three sizes (an untrained model, every detection kept)."""
    from detectres.config import compose_config
    from detectres.modeling.build import build_model

    torch.manual_seed(0)
    model = build_model(compose_config("train", ["model=quickstart", "model.roi_heads.context=separate"]).model,
                        num_classes=3).eval()
    model.roi_heads.score_thresh = 0.0
    paths = write_model_files(model, torch.from_numpy(next(images())), str(tmp_path))
    assert not model.training  # exporting leaves the model as it found it (ONNX export restores modes)
    scripted = torch.jit.load(paths["torchscript"])
    for image in images():
        ref = model.inference([{"image": torch.from_numpy(image)}])[0]
        assert_same_detections(ref, *run_onnx(paths["onnx"], image))
        assert_same_detections(ref, *scripted(torch.from_numpy(image)))


def test_what_does_not_export_says_so(exported):
    with pytest.raises(NotExportableError, match="test-time procedures and ensembles"):
        ExportableDetector(torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="unknown export format"):
        export(exported[1]["info"], "unused", ("tflite",))


def test_the_export_path_is_the_eager_inference_path():
    """No second copy of preprocessing or proposal selection: the adapter calls FasterRCNN.inference."""
    import inspect

    from detectres.modeling import export as module

    source = inspect.getsource(module)
    assert "self.model.inference(" in source
    for copy in ("batched_nms", "topk", "decode", "pixel_mean", "anchor", "F.pad"):
        assert copy not in source.split('"""', 2)[2], copy
