"""The command-line tools, run as a user runs them (subprocesses) on a tiny trained model."""
import json
import os
import subprocess
import sys

import pytest

from detectres.config import PROJECT_ROOT, compose_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_tool(script, *args):
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / script), *args], capture_output=True,
                          text=True, env=ENV, timeout=300)


@pytest.fixture(scope="module")
def trained(tiny_trained):
    return tiny_trained


def test_test_net_rebuilds_from_checkpoint_alone(trained, tmp_path):
    ckpt = os.path.join(trained, "model_final.pth")
    res = run_tool("test_net.py", f"checkpoint={ckpt}", f"runtime.output_dir={tmp_path}",
                   "model.roi_heads.score_thresh=0.0",
                   "model.roi_heads.detections_per_image=7", "runtime.num_threads=1")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]" in res.stdout
    assert "Per-category bbox AP" in res.stdout
    numbers = json.load(open(tmp_path / "eval.json"))
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class"} <= set(numbers)
    detections = json.load(open(tmp_path / "coco_instances_results.json"))
    assert detections and {d["category_id"] for d in detections} <= {1, 2, 3}
    per_image = {}
    for d in detections:
        per_image[d["image_id"]] = per_image.get(d["image_id"], 0) + 1
    assert set(per_image.values()) == {7}  # the overrides reached the checkpoint's model


def test_test_net_errors_are_clear(tmp_path):
    res = run_tool("test_net.py", f"checkpoint={tmp_path / 'missing.pth'}")
    assert res.returncode != 0 and f"not found: {tmp_path / 'missing.pth'}" in res.stderr
    res = run_tool("test_net.py", "checkpoint=x.pth", "solver.max_iters=3")
    assert res.returncode != 0 and "solver.max_iters" in res.stderr


def test_predict_writes_images(trained, tmp_path):
    ckpt = os.path.join(trained, "model_final.pth")
    res = run_tool("predict.py", f"checkpoint={ckpt}", f"runtime.output_dir={tmp_path}", "max_images=2",
                   "score_thresh=0.0")
    assert res.returncode == 0, res.stderr[-2000:]
    written = sorted(os.listdir(tmp_path))
    assert written == ["000000.png", "000001.png"]  # the inputs' names and formats
    res = run_tool("predict.py", f"checkpoint={ckpt}", f"source={tmp_path / 'nope.png'}")
    assert res.returncode != 0 and "input not found" in res.stderr


def test_predict_never_writes_over_inputs_keeps_names_and_skips_bad_images(trained, tmp_path, capsys):
    import hashlib

    import cv2
    import numpy as np
    import pytest

    from detectres.apps.predict import predict

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("p0.jpg", "p0.png", "p1.jpg"):
        cv2.imwrite(str(photos / name), np.full((64, 64, 3), 90, np.uint8))
    (photos / "p2.jpg").write_bytes(b"\xff\xd8 not really a jpeg \xff\xd9")
    digest = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in photos.iterdir()}
    ckpt = os.path.join(trained, "model_final.pth")

    def run(*overrides):
        overrides = [f"checkpoint={ckpt}", f"source={photos}", "runtime.num_threads=1", *overrides]
        return predict(compose_config("predict", overrides), overrides)

    with pytest.raises(ValueError, match=r"runtime.output_dir would write .*photos/p0.jpg over the input"):
        run(f"runtime.output_dir={photos}")
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in photos.iterdir()} == digest
    written = run(f"runtime.output_dir={tmp_path / 'out'}")
    assert sorted(os.path.basename(p) for p in written) == ["p0.jpg", "p0.png", "p1.jpg"]  # every image, no collision
    assert cv2.imread(str(tmp_path / "out" / "p0.png")) is not None
    out = capsys.readouterr().out
    assert "p2.jpg: skipped (cannot decode" in out and "wrote 3 image(s)" in out and "skipped 1 unreadable" in out
    run(f"runtime.output_dir={tmp_path / 'two'}", "max_images=2")
    assert "stopped after 2 of 4 images (max_images=2)" in capsys.readouterr().out


def test_ablation_table_rows_and_columns(trained, tmp_path):
    from detectres.apps.ablation import multiscale_overrides, run_ablation

    ckpt = os.path.join(trained, "model_final.pth")
    ms = multiscale_overrides(ckpt, "multiscale")
    # quickstart: test size 192 -> scales 64..320 around it; the canonical RoI is the model's 8 x 16 = 128 px
    assert "test.multiscale.scales=[64, 128, 192, 256, 320]" in ms and "test.multiscale.canonical_size=null" in ms
    results = run_ablation(compose_config("ablation", [f"checkpoint={ckpt}", f"context_checkpoint={ckpt}",
                                                       f"runtime.output_dir={tmp_path}", "runtime.num_threads=1"]))
    assert list(results) == ["baseline", "+refinement", "+context", "+multi-scale", "+all"]
    table = (tmp_path / "ablation.md").read_text().splitlines()
    assert table[0] == "| test | AP | AP50 | AP75 | s/image |" and len(table) == 7
    assert results["+multi-scale"]["seconds_per_image"] > results["baseline"]["seconds_per_image"]


def test_ensemble_of_a_model_with_itself_scores_like_the_model(trained, tmp_path):
    from detectres.apps.evaluate import evaluate

    ckpt = os.path.join(trained, "model_final.pth")
    base = [f"checkpoint={ckpt}", "runtime.num_threads=1", "model.roi_heads.score_thresh=0.0"]
    single = evaluate(compose_config("eval", [*base, f"runtime.output_dir={tmp_path / 'a'}"]), base)
    over = [*base, f"ensemble=[{ckpt}]", f"runtime.output_dir={tmp_path / 'b'}"]
    both = evaluate(compose_config("eval", over), over)
    for key in ("AP", "AP50", "AP75"):
        assert both[key] == pytest.approx(single[key], abs=0.05)
    with pytest.raises(ValueError, match="test=baseline only"):
        over = [*base, f"ensemble=[{ckpt}]", "test=refine"]
        evaluate(compose_config("eval", over), over)


def test_train_benchmark_reports_each_precision(tmp_path):
    proc = run_tool("train_benchmark.py", "model=quickstart", "min_size=96", "max_size=128", "iters=2", "warmup=1",
                    "modes=[fp32,bf16]", "runtime.num_threads=1", f"runtime.output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.load(open(tmp_path / "train_benchmark.json"))
    assert figures["device"] == "cpu" and figures["batch"] == 2
    for mode in ("fp32", "bf16"):
        assert figures[mode]["seconds_per_iter"] > 0 and figures[mode]["peak_memory_gib"] is None
        assert f"{mode} " in proc.stdout
    # the same weights and batch: the precisions' losses agree to bf16's precision
    assert abs(figures["fp32"]["total_loss"] - figures["bf16"]["total_loss"]) < 0.1 * figures["fp32"]["total_loss"]


def test_benchmark_large_inference_comparison_and_its_ratio_lines(monkeypatch, capsys):
    """The R101-C4 comparison (tiny input, 20 proposals here) and the lines the benchmark ends with."""
    import numpy as np

    import detectres.apps.benchmark as bench
    import detectres.apps.benchmark_timing as timing

    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    monkeypatch.setattr(timing, "cpu_runs_natively", lambda dtype: False)
    large = bench.run_large_inference(image=image, min_size=96, max_size=128, rounds=1, warmup=0, device="cpu",
                                      proposals=20, log=lambda *_: None)
    assert set(large["stages_fp32"]) == {"backbone", "rpn", "roi_heads"} and "ratio_bf16" not in large
    assert large["proposals"] == [20, 20]  # both models score the same number of proposals ...
    assert large["torchvision_input"] == large["input"] == [96, 128]  # ... on the same input size
    assert large["ratio_fp32"] == large["detectres_fp32"] / large["torchvision_fp32"] > 0
    r50 = {"train_ratio": 0.8, "inference_ratio": 0.7}
    bench.print_ratio_lines(r50, large, "cpu")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == f"inference ratio fp32 detectres/torchvision: {large['ratio_fp32']:.2f}"
    assert lines[-1] == "bf16: not supported by this CPU"
    bench.print_ratio_lines(r50, {**large, "ratio_bf16": 0.3}, "cpu")
    assert capsys.readouterr().out.strip().splitlines()[-1] == "inference ratio bf16 detectres/torchvision: 0.30"


def test_benchmark_fpn_comparison_and_its_ratio_lines(capsys):
    """R50-FPN against torchvision's fasterrcnn_resnet50_fpn and detectres R50-C4 (tiny input, one round)."""
    import numpy as np

    from detectres.apps.benchmark_fpn import print_fpn_ratio_lines, run_fpn_benchmark

    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes, classes = np.array([[10.0, 20.0, 90.0, 100.0]]), np.array([3])
    r = run_fpn_benchmark(image=image, boxes=boxes, classes=classes, min_size=96, max_size=128, rounds=1, warmup=0,
                          c4_proposals=20, log=lambda *_: None)
    assert r["input"] == [96, 128] and r["proposals"]["detectres-C4"] == 20
    assert 0 < r["proposals"]["detectres"] <= 1000 and 0 < r["proposals"]["torchvision"] <= 1000
    assert r["train_ratio"] == r["train_detectres"] / r["train_torchvision"] > 0
    assert r["fpn_over_c4"] == r["inference_detectres"] / r["inference_c4"] > 0
    print_fpn_ratio_lines(r)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"FPN train ratio detectres/torchvision: {r['train_ratio']:.2f}",
                     f"FPN inference ratio detectres/torchvision: {r['inference_ratio']:.2f}",
                     f"inference ratio detectres R50-FPN/R50-C4: {r['fpn_over_c4']:.2f}"]


def test_plain_evaluation_is_the_batched_detector_and_scores_as_training_did(trained, tmp_path, monkeypatch):
    """test=baseline runs the same batched model training evaluates (no test-time wrapper), so test_net on
    the final checkpoint reproduces the eval.json training wrote at its end."""
    from detectres.apps import evaluate as evaluate_app
    from detectres.modeling.detector import FasterRCNN

    seen = []
    real = evaluate_app.evaluate_detector
    monkeypatch.setattr(evaluate_app, "evaluate_detector", lambda model, *a, **k: (seen.append(type(model)),
                                                                                   real(model, *a, **k))[1])
    over = [f"checkpoint={os.path.join(trained, 'model_final.pth')}", "runtime.num_threads=1",
            f"runtime.output_dir={tmp_path}"]
    evaluate_app.evaluate(compose_config("eval", over), over)
    assert seen == [FasterRCNN]
    ours, training = (json.load(open(os.path.join(d, "eval.json"))) for d in (tmp_path, trained))
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert ours[key] == pytest.approx(training[key], abs=1e-9, nan_ok=True), key
