"""Deployment: a checkpoint exported to OpenVINO (fp32, bf16, INT8) and run by an engine behind the eager
model's interface; every tool runs an export folder (``checkpoint=FOLDER``), and what cannot run is one line.

OpenVINO fp32 gives eager PyTorch's detections (same classes, IoU >= 0.99, scores within 1e-3) at three
image sizes, for C4 and FPN; the accuracy of bf16 and INT8 on trained models is measured by
``tools/deploy_benchmark.py`` (docs/benchmarks.md)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from export_checks import assert_same_detections, images

from detectres.apps.export import export
from detectres.config import PROJECT_ROOT
from detectres.modeling import deployed
from detectres.modeling.deployed import DeployedDetector, ExportFolderError
from detectres.predictor import Detector

pytest.importorskip("openvino")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module", params=["c4", "fpn"])
def exported(request, tmp_path_factory):
    """The tiny quickstart C4 / FPN, exported to OpenVINO fp32 and ONNX."""
    trained = request.getfixturevalue("tiny_trained" if request.param == "c4" else "tiny_trained_fpn")
    checkpoint = os.path.join(trained, "model_final.pth")
    folder = str(tmp_path_factory.mktemp("deploy"))
    export(checkpoint, folder, ("onnx", "openvino"))
    return Detector.from_checkpoint(checkpoint, device="cpu"), folder, checkpoint


@pytest.mark.parametrize("engine", ["openvino", "onnxruntime"])
@torch.no_grad()
def test_each_engine_matches_eager_at_three_sizes(exported, engine):
    detector, folder, _ = exported
    model = DeployedDetector(folder, engine=engine, threads=1)
    assert model.engine == engine and model.precision == "fp32"
    for image in images():
        ref = detector.model.inference([{"image": torch.from_numpy(image)}])[0]
        assert_same_detections(ref, *model.run_image(image))
        # the eager interface: boxes mapped to the original size (here twice the input)
        h, w = image.shape[1:]
        [out] = model.inference([{"image": torch.from_numpy(image), "height": 2 * h, "width": 2 * w}])
        [eager] = detector.model.inference([{"image": torch.from_numpy(image), "height": 2 * h, "width": 2 * w}])
        assert_same_detections(eager, out["pred_boxes"], out["scores"], out["pred_classes"])


def test_the_folder_describes_itself_and_prefers_openvino(exported):
    detector, folder, checkpoint = exported
    info = json.load(open(os.path.join(folder, "export.json")))
    assert info["files"] == {"onnx": "model.onnx", "openvino": "model.xml"} and info["precision"] == "fp32"
    assert info["class_names"] == detector.class_names and info["config"]["model"]
    assert os.path.isfile(os.path.join(folder, "model.bin"))
    exported_detector = Detector.from_export(folder)
    assert exported_detector.model.engine == "openvino"
    assert (exported_detector.min_size, exported_detector.max_size) == (detector.min_size, detector.max_size)
    image = np.ascontiguousarray(next(images()).transpose(1, 2, 0))
    a, b = detector.predict(image), exported_detector.predict(image)
    assert a["class_names"][:3] == b["class_names"][:3] and np.allclose(a["scores"], b["scores"], atol=1e-3)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_bf16_and_int8_exports_run_with_the_same_contract(tiny_trained, tmp_path, precision):
    checkpoint = os.path.join(tiny_trained, "model_final.pth")
    folder = str(tmp_path / precision)
    export(checkpoint, folder, ("openvino",), precision=precision, calibration="val", calibration_size=4)
    model = DeployedDetector(folder, threads=1)
    assert model.precision == precision and json.load(open(os.path.join(folder, "export.json")))["precision"] == precision
    if precision == "int8":  # the convolutions got quantizers
        assert "FakeQuantize" in open(os.path.join(folder, "model.xml")).read()
    boxes, scores, classes = model.run_image(next(images()))
    assert boxes.shape == (len(scores), 4) and len(classes) == len(scores)
    assert ((classes >= 0) & (classes < model.num_classes)).all() and (np.diff(scores) <= 1e-6).all()


def test_int8_needs_calibration_and_fp32_only_formats_refuse_a_precision(tiny_trained, tmp_path):
    checkpoint = os.path.join(tiny_trained, "model_final.pth")
    with pytest.raises(ValueError, match="--precision int8 needs --calibration"):
        export(checkpoint, str(tmp_path / "a"), ("openvino",), precision="int8")
    with pytest.raises(ValueError, match="--precision bf16 is an OpenVINO precision"):
        export(checkpoint, str(tmp_path / "b"), ("onnx",), precision="bf16")


def run_tool(script, *args):
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / script), *args], capture_output=True,
                          text=True, env=ENV, timeout=300)


def test_test_net_and_predict_run_an_export_folder(exported, tmp_path):
    detector, folder, checkpoint = exported
    res = run_tool("test_net.py", f"checkpoint={folder}", "runtime.num_threads=1", "vis_images=0",
                   f"runtime.output_dir={tmp_path / 'eval'}")
    assert res.returncode == 0, res.stderr[-2000:]
    eager = run_tool("test_net.py", f"checkpoint={checkpoint}", "runtime.num_threads=1", "vis_images=0",
                     f"runtime.output_dir={tmp_path / 'eager'}")
    ap = [json.load(open(tmp_path / d / "eval.json"))["AP"] for d in ("eval", "eager")]
    assert abs(ap[0] - ap[1]) < 0.5 or (np.isnan(ap[0]) and np.isnan(ap[1])), ap  # fp32: the same detections
    res = run_tool("predict.py", f"checkpoint={folder}", "runtime.num_threads=1", "save=json", "max_images=2",
                   f"runtime.output_dir={tmp_path / 'pred'}")
    assert res.returncode == 0 and (tmp_path / "pred" / "detections.json").is_file(), res.stderr[-2000:]
    res = run_tool("test_net.py", f"checkpoint={folder}", "model.roi_heads.score_thresh=0.2")
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1].startswith(
        f"detectres: error: checkpoint={folder} is an exported model, whose graph and resize are fixed")


def test_a_missing_engine_and_corrupt_files_are_one_line(exported, tmp_path, monkeypatch):
    _, folder, _ = exported
    monkeypatch.setitem(deployed.ENGINES, "openvino", ("openvino", "no_such_openvino_module", 'pip install "x"'))
    with pytest.raises(ExportFolderError, match=r"needs the no_such_openvino_module package: pip install \"x\""):
        DeployedDetector(folder, engine="openvino")
    monkeypatch.undo()
    for name, damage in (("model.xml", b"<net><layers>broken"), ("model.bin", b"\0" * 10)):
        broken = tmp_path / name.replace(".", "_")
        shutil.copytree(folder, broken)
        (broken / name).write_bytes(damage)
        with pytest.raises(ExportFolderError) as err:
            DeployedDetector(str(broken), engine="openvino")
        assert "\n" not in str(err.value) and str(err.value).startswith(f"{broken / 'model.xml'}: OpenVINO cannot load it")
    res = run_tool("test_net.py", f"checkpoint={tmp_path / 'model_bin'}", "runtime.num_threads=1")
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1].startswith(
        f"detectres: error: {tmp_path / 'model_bin' / 'model.xml'}: OpenVINO cannot load it")


def test_openvino_fp32_gives_eager_detections_on_the_detectron2_fpn_fixture(tmp_path):
    """The Detectron2 R50-FPN fixture weights (real boxes, 1000 proposals) at 800 px on img.jpg: OpenVINO fp32
    detections are eager fp32's (same class, IoU >= 0.99, score within 1e-3)."""
    import cv2
    from detectron2_weights import FIXTURE, detectron2_state, write_model_zoo_pkl

    from detectres.apps.export import export_detector

    state = detectron2_state(schema_file=os.path.join("fpn", "schema_R50_FPN.json"))
    weights = write_model_zoo_pkl(tmp_path / "model_final_fpn_fixture.pkl", state)
    detector = Detector.from_config("r50_fpn", weights=str(weights), overrides=["model.roi_heads.score_thresh=0.0"],
                                    device="cpu")
    export_detector(detector, str(tmp_path / "ov"), ("openvino",))
    deployed_model = DeployedDetector(str(tmp_path / "ov"), threads=2)
    inputs = detector.prepare(cv2.imread(os.path.join(FIXTURE, "img.jpg")))
    torch.set_num_threads(2)
    try:
        ref = detector.model.inference([inputs])[0]
        assert len(ref["scores"]) == 100
        [out] = deployed_model.inference([inputs])
        assert_same_detections(ref, out["pred_boxes"], out["scores"], out["pred_classes"])
    finally:
        torch.set_num_threads(1)


TRAINED = os.path.join(PROJECT_ROOT, "tests", "data", "trained")  # README command 1's models (THIRD_PARTY.md)


@pytest.fixture(scope="module")
def quickstart_data(tmp_path_factory):
    """The quickstart's own 100 validation images (the generator's val split depends on its seed alone) and
    64 of its training images, for calibration."""
    from detectres.data.datasets.shapes import ensure_shapes_dataset

    return ensure_shapes_dataset(str(tmp_path_factory.mktemp("qs") / "shapes"), num_train=64, num_val=100,
                                 size=192, seed=0)


@pytest.mark.parametrize("name", ["quickstart_c4", "quickstart_fpn_fp16"])
def test_bf16_and_int8_keep_the_box_ap_of_a_trained_quickstart(name, quickstart_data, tmp_path):
    """Trained quickstart models (the FPN one stored in fp16, run in fp32): box AP on the 100 validation
    images of OpenVINO INT8 within 1.0 of eager fp32, bf16 (eager and OpenVINO) within 0.3, fp32 equal."""
    from detectres.apps.evaluate import evaluate
    from detectres.config import compose_config

    checkpoint = os.path.join(TRAINED, f"{name}.pth")
    data = [f"data.root={quickstart_data}", "data.generate.num_train=64"]

    def box_ap(tag, source, extra=()):
        evaluate(compose_config("eval", [f"checkpoint={source}", *data, "vis_images=0", "runtime.num_threads=1",
                                         f"runtime.output_dir={tmp_path / tag}", *extra]))
        return json.load(open(tmp_path / tag / "eval.json"))["AP"]

    ap = {"eager fp32": box_ap("fp32", checkpoint), "eager bf16": box_ap("bf16", checkpoint, ["runtime.amp=bf16"])}
    for precision in ("fp32", "bf16", "int8"):
        folder = str(tmp_path / f"ov_{precision}")
        export(checkpoint, folder, ("openvino",), precision=precision,
               calibration=os.path.join(quickstart_data, "train"), calibration_size=64)
        ap[f"openvino {precision}"] = box_ap(f"ev_{precision}", folder)
    print(name, {k: round(v, 2) for k, v in ap.items()})
    assert ap["eager fp32"] > 60, ap  # a trained model: the comparison means something
    assert abs(ap["openvino fp32"] - ap["eager fp32"]) < 0.1, ap
    assert abs(ap["openvino int8"] - ap["eager fp32"]) <= 1.0, ap
    # bf16 within 0.3 (the bound). The FPN file's weights are rounded to fp16 to stay under 5 MB, and that
    # model sits 0.27-0.29 from fp32 in bf16 on the development Xeon, too close to 0.3 for other CPUs' bf16
    # kernels: it is held to 0.5; the full-precision quickstart_fpn's 0.13 is measured in docs/benchmarks.md.
    bound = 0.5 if name.endswith("fp16") else 0.3
    assert abs(ap["openvino bf16"] - ap["eager fp32"]) <= bound and abs(ap["eager bf16"] - ap["eager fp32"]) <= bound, ap


def test_a_broken_export_description_is_one_line(exported, tmp_path, monkeypatch):
    """export.json truncated, nested without end, not a mapping, or huge: each refused in one line."""
    _, folder, _ = exported
    for name, text in (("truncated", '{"files": {"openvino": "mod'), ("nested", "[" * 100000 + "]" * 100000),
                       ("list", "[1, 2]"), ("huge", '{"pad": "' + "x" * 2000 + '"}')):
        broken = tmp_path / name
        shutil.copytree(folder, broken)
        (broken / "export.json").write_text(text)
        if name == "huge":
            monkeypatch.setattr(deployed, "MAX_INFO_BYTES", 1000)
        with pytest.raises(ExportFolderError) as err:
            DeployedDetector(str(broken))
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{broken / 'export.json'}: "), message
        assert {"truncated": "not a readable", "nested": "nested too deeply", "list": "expected a mapping",
                "huge": "2011 bytes, more than"}[name] in message, message
