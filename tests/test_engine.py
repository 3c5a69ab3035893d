import json
import os

import pytest
import torch

from detectres.apps.train import train
from detectres.config import compose_config
from detectres.engine.checkpoint import Checkpointer
from detectres.engine.solver import WarmupMultiStepLR, build_optimizer, warmup_multistep_factor
from detectres.utils.file_io import atomic_torch_save, load_checkpoint


def test_warmup_multistep_schedule():
    f = lambda it: warmup_multistep_factor(it, steps=[10, 20], gamma=0.1, warmup_iters=5, warmup_factor=0.001)
    assert f(0) == pytest.approx(0.001)
    assert f(5) == pytest.approx(1.0) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(0.1) and f(25) == pytest.approx(0.01)
    assert f(2) == pytest.approx(0.001 * 0.6 + 0.4)


def test_weight_decay_groups():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(model, base_lr=0.1, weight_decay=1e-4, weight_decay_norm=0.0)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    assert len(opt.param_groups[1]["params"]) == 2


def test_atomic_save_leaves_old_file_on_failure(tmp_path):
    path = str(tmp_path / "ckpt.pth")
    atomic_torch_save({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"a": Unpicklable()}, path)
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))
    assert os.listdir(tmp_path) == ["ckpt.pth"]  # no temp file left behind


def test_checkpointer_restores_optimizer_scheduler_and_rng(tmp_path):
    def make():
        model = torch.nn.Linear(3, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sched = WarmupMultiStepLR(opt, max_iter=10, steps=[3], warmup_iters=2, warmup_factor=0.1)
        return model, opt, sched

    model, opt, sched = make()
    for _ in range(4):
        model(torch.randn(5, 3)).sum().backward()
        opt.step()
        sched.step()
    ckpt = Checkpointer(str(tmp_path), model=model, optimizer=opt, scheduler=sched, extra={"class_names": ["a"]})
    ckpt.save("model_0000003", 3)
    expected_rand = torch.rand(3)
    model2, opt2, sched2 = make()
    start = Checkpointer(str(tmp_path), model=model2, optimizer=opt2, scheduler=sched2).resume()
    assert start == 4
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"]) == pytest.approx(0.01)
    assert torch.equal(model2.weight, model.weight)
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"])
    assert torch.equal(torch.rand(3), expected_rand)  # RNG restored to the saved point


def read_metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_train_evaluate_and_resume(tmp_path, shapes_overrides):
    out = str(tmp_path / "run")
    common = [*shapes_overrides, f"runtime.output_dir={out}", "solver.ims_per_batch=2", "solver.max_iter=4",
              "solver.lr_scheduler.steps=[2]", "solver.lr_scheduler.warmup_iters=1", "solver.checkpoint_period=2",
              "log_period=1", "vis_images=1", "runtime.num_threads=1"]
    results = train(compose_config("train", common))
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert key in results
    assert set(json.load(open(os.path.join(out, "eval.json")))["per_class"]) == {"circle", "rectangle", "triangle"}
    assert os.path.isfile(os.path.join(out, "inference", "coco_instances_results.json"))
    assert os.path.isfile(os.path.join(out, "vis", "000000.jpg"))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))
    first_run = {m["iteration"]: m for m in read_metrics(os.path.join(out, "metrics.jsonl")) if "lr" in m}
    assert sorted(first_run) == [0, 1, 2, 3]
    state = load_checkpoint(os.path.join(out, "model_final.pth"))
    assert state["iteration"] == 3 and state["class_names"] == ["circle", "rectangle", "triangle"]
    assert state["config"]["solver"]["max_iter"] == 4

    # Simulate a run interrupted after the checkpoint at iteration 2 and resume it.
    os.remove(os.path.join(out, "model_final.pth"))
    with open(os.path.join(out, "last_checkpoint"), "w") as f:
        f.write("model_0000002.pth")
    os.remove(os.path.join(out, "metrics.jsonl"))
    train(compose_config("train", [*common, "resume=true"]))
    resumed = {m["iteration"]: m for m in read_metrics(os.path.join(out, "metrics.jsonl")) if "lr" in m}
    assert sorted(resumed) == [2, 3]  # continued at the saved iteration, not from 0
    for it in (2, 3):
        assert resumed[it]["lr"] == pytest.approx(first_run[it]["lr"])


def test_resume_with_a_changed_model_names_the_checkpoint(tmp_path):
    Checkpointer(str(tmp_path), model=torch.nn.Linear(3, 2)).save("model_0000002", 1)
    with pytest.raises(ValueError, match=r"(?s)cannot resume from .*model_0000002.pth: .*size mismatch"):
        Checkpointer(str(tmp_path), model=torch.nn.Linear(4, 2)).resume()


def test_run_lock_is_exclusive_released_and_survives_a_holder_finishing(tmp_path):
    from detectres.utils.run_lock import LOCK_NAME, OutputFolderLocked, RunLock

    with RunLock(str(tmp_path)):
        holder = json.load(open(tmp_path / LOCK_NAME))
        assert holder["pid"] == os.getpid()
        with pytest.raises(OutputFolderLocked, match=rf"{tmp_path} is in use by another run: pid {os.getpid()}"):
            RunLock(str(tmp_path)).acquire()  # flock: a second open of the file conflicts, even in one process
    assert not (tmp_path / LOCK_NAME).exists()
    # a lock file left by a run that is gone (no flock held) is taken over
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "x", "command": "y"}))
    lock = RunLock(str(tmp_path))
    lock.acquire()
    assert json.load(open(tmp_path / LOCK_NAME))["pid"] == os.getpid()
    lock.release()


def test_resume_refuses_a_missing_named_checkpoint_and_warns_without_one(tmp_path, caplog):
    ckpt = Checkpointer(str(tmp_path), model=torch.nn.Linear(2, 2))
    assert ckpt.resume() == 0 and "holds no checkpoint yet" in caplog.text
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    with pytest.raises(FileNotFoundError, match="last_checkpoint names .*model_0000009.pth, which is missing"):
        ckpt.resume()

