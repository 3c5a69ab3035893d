"""Scale-out and faults on CPU: torchrun with gloo, exact resume after SIGKILL, NaN losses, a dead rank."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from detectres.apps.train import train
from detectres.config import PROJECT_ROOT, compose_config
from detectres.data.samplers import InferenceSampler, TrainingBatchSampler
from detectres.engine.trainer import NonFiniteLossError
from detectres.utils.file_io import load_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TRAIN = str(PROJECT_ROOT / "tools" / "train_net.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def small(shapes_overrides):
    """The tiny shapes set at one size (every image 128x128, so batches pad alike however they are split)."""
    return [*shapes_overrides, "input.min_size_train=[128]", "input.max_size_train=128", "input.min_size_test=128",
            "input.max_size_test=128", "solver.lr_scheduler.warmup_iters=1", "vis_images=0", "runtime.num_threads=1",
            "log_period=1"]


def final_weights(out) -> dict:
    return load_checkpoint(os.path.join(out, "model_final.pth"))["model"]


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def run(args, timeout=300):
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, timeout=timeout)
    return proc


def test_batch_sampler_splits_global_batches_across_ranks_and_resumes():
    ratios = [1.5, 0.5, 1.5, 0.5, 2.0, 0.7, 1.0, 0.3, 1.2, 0.9]
    one = iter(TrainingBatchSampler(size=10, batch_size=4, seed=3, aspect_ratios=ratios))
    ranks = [iter(TrainingBatchSampler(size=10, batch_size=4, seed=3, aspect_ratios=ratios, rank=r, world_size=2))
             for r in range(2)]
    for _ in range(12):
        whole = next(one)
        parts = [next(r) for r in ranks]
        assert parts[0] + parts[1] == whole and len(parts[0]) == 2  # same images, same sample seeds
        assert len({ratios[i] >= 1 for i, _ in whole}) == 1
    later = list(zip(range(5), iter(TrainingBatchSampler(size=10, batch_size=4, seed=3, aspect_ratios=ratios))))
    resumed = iter(TrainingBatchSampler(size=10, batch_size=4, seed=3, aspect_ratios=ratios, start_batch=3))
    assert next(resumed) == later[3][1] and next(resumed) == later[4][1]
    with pytest.raises(ValueError, match="ims_per_batch=5 .* divisible by the number of ranks, 2"):
        TrainingBatchSampler(size=10, batch_size=5, world_size=2)
    shards = [list(InferenceSampler(7, rank=r, world_size=3)) for r in range(3)]
    assert shards == [[0, 1, 2], [3, 4, 5], [6]]


def test_two_ranks_end_with_the_parameters_of_one_process_with_twice_the_batch(small, tmp_path):
    common = [*small, "model.backbone.norm=FrozenBN", "solver.max_iter=3", "solver.lr_scheduler.steps=[2]"]
    two = run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), TRAIN,
               *common, "solver.ims_per_batch=4", f"runtime.output_dir={tmp_path / 'two'}"])
    assert two.returncode == 0, two.stderr[-3000:]
    one = run([TRAIN, *common, "solver.ims_per_batch=4", f"runtime.output_dir={tmp_path / 'one'}"])
    assert one.returncode == 0, one.stderr[-3000:]
    half = run([TRAIN, *common, "solver.ims_per_batch=2", f"runtime.output_dir={tmp_path / 'half'}"])
    assert half.returncode == 0, half.stderr[-3000:]
    difference = max_difference(final_weights(tmp_path / "two"), final_weights(tmp_path / "one"))
    print(f"two ranks x 2 images vs one process x 4 images: max |difference| {difference:.3g}")
    assert difference < 1e-5
    assert max_difference(final_weights(tmp_path / "two"), final_weights(tmp_path / "half")) > 1e-4  # it can tell
    # rank 0 alone wrote; the distributed evaluation scored all 8 images like the single process
    assert sorted(f for f in os.listdir(tmp_path / "two") if f.endswith(".pth")) == ["model_final.pth"]
    assert (two.stdout + two.stderr).count("training on cpu (1 threads, 2 processes)") == 1  # rank 0 logs
    assert open(tmp_path / "two" / "eval.json").read() == open(tmp_path / "one" / "eval.json").read().replace(
        _seconds(tmp_path / "one"), _seconds(tmp_path / "two"))


def _seconds(out) -> str:
    import json

    return json.dumps(json.load(open(out / "eval.json"))["seconds_per_image"])


def test_sigkill_then_resume_ends_with_the_weights_of_an_unbroken_run(small, tmp_path):
    """With epochs (2 of the 24 images at 2 per step: 24 steps, a checkpoint and an evaluation every epoch, so
    the best model's state is resumed too), gradient accumulation and an EMA of the weights."""
    common = [TRAIN, *small, "runtime.deterministic=true", "solver.ims_per_batch=2", "solver.epochs=2",
              "solver.lr_scheduler.steps=[16]", "solver.checkpoint_period=1", "solver.eval_period=1",
              "solver.accumulate=2", "solver.ema.decay=0.9", "solver.ema.tau=5"]
    unbroken_log = open(tmp_path / "unbroken.log", "w")  # a file, not a pipe nobody reads until the end
    unbroken = subprocess.Popen([sys.executable, *common, f"runtime.output_dir={tmp_path / 'unbroken'}"], env=ENV,
                                stdout=unbroken_log, stderr=subprocess.STDOUT)  # beside the killed run
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, *common, f"runtime.output_dir={out}"], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # last_checkpoint is written after the checkpoint file it names: wait for it, not for the file
    while not (out / "last_checkpoint").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "model_final.pth").exists()
    killed_at = open(out / "last_checkpoint").read().strip()
    resumed = run([*common, f"runtime.output_dir={out}", "resume=true"])
    assert unbroken.wait(timeout=300) == 0, (tmp_path / "unbroken.log").read_text()[-3000:]
    unbroken_log.close()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {out / killed_at}" in resumed.stdout + resumed.stderr
    difference = max_difference(final_weights(out), final_weights(tmp_path / "unbroken"))
    resumed_final, unbroken_final = (load_checkpoint(os.path.join(o, "model_final.pth"))
                                     for o in (out, tmp_path / "unbroken"))
    ema_difference = max_difference(resumed_final["ema"]["model"], unbroken_final["ema"]["model"])
    print(f"killed after {killed_at}, resumed: max |difference| to the unbroken run {difference:.3g} (EMA "
          f"{ema_difference:.3g})")
    assert difference == 0.0 and ema_difference == 0.0 and killed_at == "model_0000012.pth"
    assert resumed_final["ema"]["updates"] == unbroken_final["ema"]["updates"] == 24
    assert resumed_final["best"] == unbroken_final["best"]


def test_nan_loss_names_iteration_and_terms_and_can_skip(small, tmp_path, monkeypatch):
    from detectres.modeling.roi_heads.res5_head import Res5ROIHeads

    calls = {"n": 0}
    original = Res5ROIHeads.forward

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        losses = original(self, *args, **kwargs)
        if calls["n"] in (3, 4):  # iterations 2 and 3
            losses["loss_cls"] = losses["loss_cls"] * float("nan")
        return losses

    monkeypatch.setattr(Res5ROIHeads, "forward", poisoned)
    common = [*small, "solver.ims_per_batch=2", "solver.max_iter=6", "solver.lr_scheduler.steps=[5]",
              "solver.checkpoint_period=2"]
    with pytest.raises(NonFiniteLossError, match=r"at iteration 2: loss_rpn_cls=[\d.]+, loss_rpn_loc=[\d.]+, "
                                                 r"loss_cls=nan, loss_box_reg=[\d.]+, total_loss=nan") as err:
        train(compose_config("train", [*common, f"runtime.output_dir={tmp_path / 'stop'}"]))
    assert "solver.max_nonfinite_steps" in str(err.value)
    kept = load_checkpoint(str(tmp_path / "stop" / "model_0000002.pth"))
    assert kept["iteration"] == 1 and open(tmp_path / "stop" / "last_checkpoint").read() == "model_0000002.pth"
    calls["n"] = 0
    results = train(compose_config("train", [*common, "solver.max_nonfinite_steps=2",
                                                         f"runtime.output_dir={tmp_path / 'skip'}"]))
    weights = final_weights(tmp_path / "skip")
    assert "AP50" in results and all(torch.isfinite(v).all() for v in weights.values())


INJECT_NAN = """
import runpy, sys
from detectres.modeling.roi_heads.res5_head import Res5ROIHeads
original, calls = Res5ROIHeads.forward, [0]
def poisoned(self, *args, **kwargs):
    calls[0] += 1
    losses = original(self, *args, **kwargs)
    if calls[0] == 4:  # iteration 3
        losses["loss_box_reg"] = losses["loss_box_reg"] + float("inf")
    return losses
Res5ROIHeads.forward = poisoned
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_injected_nan_loss_stops_the_tool_with_exit_1_and_the_checkpoint_kept(small, tmp_path):
    proc = run(["-c", INJECT_NAN, TRAIN, *small, "solver.ims_per_batch=2", "solver.max_iter=8",
                "solver.lr_scheduler.steps=[6]",
                "solver.checkpoint_period=2", f"runtime.output_dir={tmp_path}"])
    assert proc.returncode == 1
    assert "loss became non-finite at iteration 3: " in proc.stderr and "loss_box_reg=inf" in proc.stderr
    assert open(tmp_path / "last_checkpoint").read() == "model_0000002.pth"
    assert load_checkpoint(str(tmp_path / "model_0000002.pth"))["iteration"] == 1
    assert not (tmp_path / "model_final.pth").exists()


def test_diverging_run_exits_non_zero_keeping_the_last_good_checkpoint(small, tmp_path):
    # the learning rate jumps by 1e12 after iteration 4, and the loss blows up
    proc = run([TRAIN, *small, "solver.ims_per_batch=2", "solver.max_iter=30", "solver.lr_scheduler.steps=[4]",
                "solver.lr_scheduler.gamma=1e12", "solver.checkpoint_period=2", f"runtime.output_dir={tmp_path}"])
    assert proc.returncode == 1
    message = proc.stderr + proc.stdout
    assert "became non-finite" in message, message[-3000:]  # the loss, or the weights before a checkpoint
    last = open(tmp_path / "last_checkpoint").read().strip()
    state = load_checkpoint(str(tmp_path / last))
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "model_final.pth").exists()


def test_a_dead_rank_makes_the_other_exit_non_zero(small, tmp_path):
    port, timeout = free_port(), 20
    procs = []
    for rank in range(2):
        env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank),
               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2"}
        procs.append(subprocess.Popen(
            [sys.executable, TRAIN, *small, "model.backbone.norm=FrozenBN", "solver.ims_per_batch=4",
             "solver.max_iter=100000", "solver.lr_scheduler.steps=[99999]", f"runtime.dist_timeout_s={timeout}",
             f"runtime.output_dir={tmp_path}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    deadline = time.time() + 120
    while not (tmp_path / "metrics.jsonl").exists() and time.time() < deadline:  # both are training
        time.sleep(0.1)
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.time()
    try:
        code = procs[0].wait(timeout=timeout + 30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    waited = time.time() - t0
    print(f"rank 0 exited with {code} {waited:.1f} s after rank 1 was killed")
    assert code != 0 and waited < timeout + 30
