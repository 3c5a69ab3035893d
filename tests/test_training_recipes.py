"""The practitioner's training recipes: gradient accumulation, EMA of the weights, epochs, LR schedules,
the best model kept with early stopping, experiment trackers, and the log file as the run's record."""
import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from detectres.apps.train import RunLength, train
from detectres.config import PROJECT_ROOT, compose_config
from detectres.config.overrides import run_length_overrides
from detectres.engine.checkpoint import Checkpointer
from detectres.engine.ema import ModelEMA
from detectres.engine.hooks import BestModel
from detectres.utils.file_io import load_checkpoint

TRAIN = str(PROJECT_ROOT / "tools" / "train_net.py")
TEST = str(PROJECT_ROOT / "tools" / "test_net.py")


def equal_images(folder, count=8, side=96, boxes_per_image=2):
    """``count`` images of one size with the same number of boxes each: every image then gives the same
    number of sampled anchors and RoIs, so the losses (means over them) split evenly into micro-batches."""
    rng = np.random.default_rng(0)
    os.makedirs(folder / "images", exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        image = np.full((side, side, 3), 40, np.uint8)
        for b in range(boxes_per_image):
            x, y = (int(v) for v in rng.integers(4, side // 2, 2))
            w, h = (int(v) for v in rng.integers(16, side // 2 - 4, 2))
            cls = int(rng.integers(1, 4))
            cv2.rectangle(image, (x, y), (x + w, y + h), (80 * cls, 255 - 60 * cls, 120), -1)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cls,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        cv2.imwrite(str(folder / "images" / f"{i}.png"), image)
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": side, "height": side})
    categories = [{"id": k, "name": n} for k, n in enumerate(["red", "green", "blue"], start=1)]
    with open(folder / "ann.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return [f"data.{split}.{key}={folder / value}" for split in ("train", "val")
            for key, value in (("image_dir", "images"), ("ann_file", "ann.json"))]


def test_accumulated_micro_batches_give_the_update_of_one_big_batch(tmp_path):
    """Frozen norm, every anchor and RoI sampled (no random choice), images alike: 8 images per step at once
    or as 2 micro-batches of 4 end 5 steps with the same weights (to float rounding)."""
    data = ["data=custom", *equal_images(tmp_path / "data"), "data.num_workers=0"]
    common = [*data, "model.backbone.norm=FrozenBN", "model.rpn.batch_size_per_image=1000000",
              "model.rpn.post_nms_topk_train=10", "model.roi_heads.batch_size_per_image=1000000",
              "input.min_size_train=[96]", "input.max_size_train=96", "input.random_flip=0", "augment=none",
              "solver.ims_per_batch=8", "solver.max_iter=5", "solver.lr_scheduler.warmup_iters=1", "vis_images=0",
              "runtime.deterministic=true", "runtime.num_threads=1", "log_period=5", "runtime.loggers=[]"]
    weights = {}
    for k in (1, 2):
        out = tmp_path / f"accumulate{k}"
        train(compose_config("train", [*common, f"solver.accumulate={k}", f"runtime.output_dir={out}"]))
        weights[k] = load_checkpoint(str(out / "model_final.pth"))["model"]
        losses = [json.loads(line) for line in open(out / "metrics.jsonl") if "total_loss" in line]
        assert losses and all(math.isfinite(r["total_loss"]) for r in losses)
    difference = max((weights[1][n].double() - weights[2][n].double()).abs().max().item() for n in weights[1])
    print(f"5 steps of 8 images, accumulate=2 vs 1: max |weight difference| {difference:.3g}")
    assert difference <= 1e-6, f"accumulate=2 differs from one batch of 8 by {difference:.3g}"


def test_the_ema_warms_up_its_decay_and_follows_the_weights():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = ModelEMA(model, decay=0.9, tau=2.0)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    d1 = 0.9 * (1 - math.exp(-1 / 2.0))
    assert ema.decay_at(1) == pytest.approx(d1) and ema.decay_at(10 ** 6) == pytest.approx(0.9)
    assert torch.allclose(ema.model.weight, torch.full((1, 2), 1 - d1))
    ema.update(model)
    d2 = ema.decay_at(2)
    assert torch.allclose(ema.model.weight, torch.full((1, 2), d2 * (1 - d1) + (1 - d2)))
    assert not ema.model.weight.requires_grad and not ema.model.training


class Recorder:
    def __init__(self, folder):
        self.saved = []
        self.folder = folder

    def save(self, name, iteration, mark_last=True):
        assert not mark_last  # model_best never becomes what a resume continues from
        self.saved.append((name, iteration))
        return os.path.join(self.folder, f"{name}.pth")


def test_the_best_model_is_kept_and_patience_stops_after_evaluations_without_improvement(tmp_path):
    recorder = Recorder(tmp_path)
    best = BestModel(recorder, metric=None, patience=2)
    coco = {"AP": 1.0}
    stops = [best.update(it, {"bbox/AP": ap}, coco) for it, ap in ((9, 10.0), (19, 12.5), (29, 12.5), (39, 11.0))]
    assert stops[:3] == [None, None, None] and "has not improved for 2 evaluations" in stops[3]
    assert recorder.saved == [("model_best", 9), ("model_best", 19)]
    assert best.state_dict() == {"metric": "bbox/AP", "value": 12.5, "iteration": 19, "evaluations_since_best": 2}
    voc = BestModel(recorder, metric=None, patience=0)
    assert voc.update(0, {"bbox/AP": 1.0, "bbox/AP50": 2.0}, {"metric": "voc_11point"}) is None
    assert voc.metric == "bbox/AP50" and voc.value == 2.0
    with pytest.raises(ValueError, match=r"solver.best_metric=bbox/APX is not among this evaluation's metrics"):
        BestModel(recorder, metric="bbox/APX", patience=0).update(0, {"bbox/AP": 1.0}, coco)


def test_epochs_set_the_run_length_and_the_periods_from_the_training_images():
    cfg = compose_config("train", ["solver.epochs=3", "solver.eval_period=1"])
    assert cfg.solver.max_iter is None and run_length_overrides(["solver.epochs=3"])[-1] == "solver.max_iter=null"
    length = RunLength.of(cfg.solver, 803)  # 101 steps of 8 (the last one wraps around the shuffle)
    assert (length.max_iter, length.eval_period, length.checkpoint_period) == (303, 101, 500 * 101)
    assert "evaluation every 101 steps (1 epochs)" in length.describe_periods()
    assert RunLength.of(compose_config("train", []).solver, 800).max_iter == 1000


def test_fine_tuning_on_other_classes_starts_the_class_layers_afresh_in_one_line(tiny_trained, caplog):
    from detectres.weights.loading import WeightsMismatchError
    from detectres.weights.restore import restore_model

    path = os.path.join(tiny_trained, "model_final.pth")
    cfg = compose_config("train", ["model=quickstart", f"model.weights={path}", "runtime.device=cpu"])
    five = ["a", "b", "c", "d", "e"]
    with pytest.raises(WeightsMismatchError, match="was trained for 3 classes and this run has 5 classes: to fine-tune on "
                                                   "these classes pass strict_weights=false"):
        restore_model(cfg, class_names=five)
    caplog.set_level("INFO")
    model = restore_model(cfg, class_names=five, strict=False).model
    lines = [r.getMessage() for r in caplog.records if "fine-tuning" in r.getMessage()]
    assert len(lines) == 1 and "trained for 3 classes, on 5 classes: roi_heads.box_predictor.bbox_pred, " \
                               "roi_heads.box_predictor.cls_score start afresh" in lines[0]
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    state = load_checkpoint(path)["model"]
    assert torch.equal(model.state_dict()["backbone.stem.conv1.weight"], state["backbone.stem.conv1.weight"])
    assert model.roi_heads.box_predictor.cls_score.out_features == 6
    # as many classes under other names (or in another order) is other classes too: not loaded as if the same
    other = ["star", "cross", "moon"]
    with pytest.raises(WeightsMismatchError, match="trained for classes circle, rectangle, triangle and this run has "
                                                   "classes star, cross, moon: to fine-tune"):
        restore_model(cfg, class_names=other)
    caplog.clear()
    model = restore_model(cfg, class_names=other, strict=False).model
    assert [r.getMessage() for r in caplog.records if "fine-tuning" in r.getMessage()][0].startswith(
        f"fine-tuning {path}, trained for classes circle, rectangle, triangle, on classes star, cross, moon: ")
    assert not torch.equal(model.state_dict()["roi_heads.box_predictor.cls_score.weight"],
                           state["roi_heads.box_predictor.cls_score.weight"])
    restore_model(cfg, class_names=["circle", "rectangle", "triangle"])  # the same classes load strictly


def wandb_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("wandb") is not None


@pytest.fixture(scope="module")
def stopped_run(shapes_overrides, tmp_path_factory):
    """One run through the command line, output piped (no terminal): 4 epochs of the tiny shapes set with an
    EMA, evaluated every epoch with patience 1, reporting to TensorBoard, MLflow (a local store in its working
    folder) and W&B (offline) when installed. The weights cannot move (LR 1e-30, frozen norm), so the second
    evaluation is no better than the first and the run stops there."""
    folder = tmp_path_factory.mktemp("stopped")
    out = folder / "run"
    loggers = "[tensorboard,mlflow,wandb]" if wandb_installed() else "[tensorboard,mlflow]"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    proc = subprocess.run(
        [sys.executable, TRAIN, *shapes_overrides, "model.backbone.norm=FrozenBN", "solver.epochs=4",
         "solver.ims_per_batch=4", "solver.eval_period=1", "solver.patience=1", "solver.ema.decay=0.9",
         "solver.ema.tau=5", "solver.optimizer.base_lr=1e-30", "solver.lr_scheduler.warmup_iters=1", "log_period=3",
         "vis_images=0", "runtime.num_threads=1", f"runtime.loggers={loggers}", f"runtime.output_dir={out}"],
        cwd=folder, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, out, proc


def test_early_stopping_ends_like_a_finished_run_and_keeps_the_best_model(stopped_run):
    folder, out, proc = stopped_run
    printed = proc.stdout + proc.stderr
    assert "solver.epochs=4: 24 training images at 4 per step = 6 steps per epoch, so 24 steps" in printed
    assert "stopping at iteration 12 of 24: bbox/AP has not improved for 1 evaluations (solver.patience=1)" in printed
    assert "training stopped early at step 12 of 24" in printed
    final, best = load_checkpoint(str(out / "model_final.pth")), load_checkpoint(str(out / "model_best.pth"))
    assert final["iteration"] == 11 and best["iteration"] == 5
    assert best["best"]["iteration"] == 5 and best["best"]["metric"] == "bbox/AP"
    assert best["ema"]["updates"] == 6 and final["ema"]["updates"] == 12  # both weight sets are stored
    assert open(out / "last_checkpoint").read().strip() == "model_final.pth"


def test_test_net_on_model_best_reproduces_its_stored_metric(stopped_run, shapes_overrides):
    folder, out, _ = stopped_run
    best = load_checkpoint(str(out / "model_best.pth"))["best"]["value"]
    proc = subprocess.run([sys.executable, TEST, f"checkpoint={out / 'model_best.pth'}", *shapes_overrides[:1],
                           f"runtime.output_dir={folder / 'test'}", "runtime.num_threads=1", "vis_images=0"],
                          capture_output=True, text=True, timeout=300, cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "using its EMA weights" in proc.stdout + proc.stderr
    measured = json.load(open(folder / "test" / "eval.json"))["AP"]
    print(f"model_best.pth: stored bbox/AP {best!r}, test_net {measured!r}")
    assert abs(measured - best) <= 1e-6


def test_the_log_file_is_the_runs_record(stopped_run):
    _, out, proc = stopped_run
    log = (out / "train_net.log").read_text()
    for expected in ("solver.epochs=4", "iter 3/24  loss_rpn_cls", " s/it  eta ", " MiB", "bbox |     AP |",
                     "Per-category bbox AP", "best bbox/AP so far", "no better than", "stopping at iteration 12",
                     "training stopped early at step 12 of 24"):
        assert expected in log, expected
    assert "\r" not in proc.stderr and "it/s" not in proc.stderr  # no progress bar where there is no terminal


def test_mlflow_holds_the_runs_parameters_metrics_and_artifacts(stopped_run):
    from mlflow.tracking import MlflowClient

    folder, out, _ = stopped_run
    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    run_id = json.load(open(out / "tracking.json"))["mlflow_run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["solver.epochs"] == "4"
    assert run.data.params["model.backbone.norm"] == "FrozenBN" and len(run.data.params) > 100
    history = client.get_metric_history(run_id, "bbox/AP")
    assert [m.step for m in history] == [5, 11] and run.data.metrics["bbox/AP"] == history[-1].value
    assert len(client.get_metric_history(run_id, "total_loss")) >= 4 and "lr" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"eval.json", "pr_curves.png", "training_curves.png", "confusion_matrix.png"} <= artifacts
    assert run.data.tags["final_checkpoint"] == str(out / "model_final.pth")
    print(f"MLflow run {run_id}: {len(run.data.params)} params, bbox/AP {history[-1].value}, artifacts "
          f"{sorted(artifacts)}")


@pytest.mark.skipif(not wandb_installed(), reason="wandb is not installed (pip install '.[wandb]')")
def test_wandb_writes_an_offline_run_folder(stopped_run):
    _, out, _ = stopped_run
    runs = [d for d in os.listdir(out / "wandb") if d.startswith("offline-run-")]
    assert len(runs) == 1
    run_id = json.load(open(out / "tracking.json"))["wandb_run_id"]
    assert runs[0].endswith(run_id) and os.path.isfile(out / "wandb" / runs[0] / f"run-{run_id}.wandb")


def test_a_tracker_that_is_not_installed_is_one_line_before_any_work(monkeypatch):
    import importlib.util

    from detectres.apps.schemas import validate_tool_config
    from detectres.config.schema import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"runtime.loggers=\['tensorboard', 'wandb'\]: wandb is not installed; run: "
                                          r"pip install 'detectres\[wandb\]'"):
        validate_tool_config("train", compose_config("train", ["runtime.loggers=[tensorboard,wandb]",
                                                               "runtime.output_dir=x"]))


def test_a_resumed_run_made_longer_follows_its_own_schedule():
    """A scheduler's checkpoint holds where the run is, not the schedule's shape: resumed with twice the steps,
    the cosine decays over the new length (it stayed at 0 when the old length came back with the state)."""
    from detectres.engine.solver import WarmupCosineLR

    def make(max_iter):
        optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
        return optimizer, WarmupCosineLR(optimizer, max_iter=max_iter, warmup_iters=0)

    optimizer, short = make(10)
    for _ in range(10):
        optimizer.step()
        short.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)
    optimizer, longer = make(20)
    longer.load_state_dict(short.state_dict())
    assert longer.max_iter == 20 and longer.last_epoch == 10
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)  # half way down the new cosine


def test_a_failing_tracker_is_one_warning_and_training_goes_on(tmp_path, caplog):
    from detectres.utils.events import MetricsWriter

    class Broken:
        def log_metrics(self, step, scalars):
            raise ConnectionError("tracking server went away\nmore detail")

        def finish(self, **kwargs):
            raise AssertionError("a dropped tracker is not called again")

    writer = MetricsWriter(str(tmp_path), tensorboard=False, trackers=[Broken()])
    writer.write(0, {"loss": 1.0})
    writer.write(1, {"loss": 0.5})
    writer.finish(final_checkpoint=None, failed=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["Broken failed reporting metrics (ConnectionError: tracking server went away); the run goes "
                        "on without it"]
    assert len(open(tmp_path / "metrics.jsonl").readlines()) == 2


def test_an_early_stopped_run_is_not_resumed(stopped_run, shapes_overrides):
    folder, out, _ = stopped_run
    proc = subprocess.run([sys.executable, TRAIN, *shapes_overrides, "model.backbone.norm=FrozenBN", "solver.epochs=4",
                           "solver.ims_per_batch=4", "solver.eval_period=1", "solver.patience=1", "solver.ema.decay=0.9",
                           "solver.ema.tau=5", "solver.optimizer.base_lr=1e-30", "solver.lr_scheduler.warmup_iters=1",
                           "runtime.loggers=[]", "runtime.num_threads=1", f"runtime.output_dir={out}", "resume=true"],
                          cwd=folder, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"detectres: error: resume=true: {out / 'model_final.pth'} ended the run early (bbox/AP has not improved")
