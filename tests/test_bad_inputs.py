"""Hostile inputs, as a new user would type them: every one ends in one line, `detectres: error: ...`,
a non-zero exit status, and nothing lost or left behind (no untrained checkpoint, no temporary file,
no lock, no folder a refused run made)."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from detectres.config import PROJECT_ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TRAIN = str(PROJECT_ROOT / "tools" / "train_net.py")
TOOLS = {"train": TRAIN, "test": str(PROJECT_ROOT / "tools" / "test_net.py"),
         "predict": str(PROJECT_ROOT / "tools" / "predict.py"), "demo": str(PROJECT_ROOT / "demo" / "demo.py"),
         "check": str(PROJECT_ROOT / "tools" / "check_data.py")}


def run(tool, *args, env=ENV, timeout=300):
    return subprocess.run([sys.executable, TOOLS[tool], *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def run_many(*calls, env=ENV, timeout=300) -> list[subprocess.CompletedProcess]:
    """``run(tool, *args)`` for each ``(tool, *args)`` in ``calls``, all at once (each is one thread that
    mostly imports: together they use the core a serial run leaves idle)."""
    procs = [subprocess.Popen([sys.executable, TOOLS[tool], *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for tool, *args in calls]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return out


def error_line(res) -> str:
    """The one error line: the last line of stderr, and the only one starting 'detectres: error:'."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0, res.stdout[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert [ln for ln in lines if ln.startswith("detectres: error:")] == lines[-1:], res.stderr[-3000:]
    return lines[-1]


def leftovers(folder) -> list[str]:
    """Files in ``folder`` a run refused at start must not leave (the folder itself included)."""
    if not os.path.exists(folder):
        return []
    return sorted(f for f in os.listdir(folder))


FAST = ["solver.ims_per_batch=2", "solver.max_iter=2", "solver.lr_scheduler.steps=[1]",
        "solver.lr_scheduler.warmup_iters=1", "vis_images=0", "runtime.num_threads=1", "log_period=1"]


@pytest.fixture(scope="module")
def tiny(shapes_overrides):
    """Overrides for a 2-iteration quickstart run on the tiny shapes set (a few seconds)."""
    return [*shapes_overrides, *FAST]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("trained") / "run"
    res = run("train", *tiny, "solver.checkpoint_period=1", f"runtime.output_dir={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    return out


BAD_VALUES = [
    ("solver.ims_per_batch=0", "solver.ims_per_batch=0: must be an integer in [1, 4096]"),
    ("solver.ims_per_batch=1000000", "solver.ims_per_batch=1000000: must be an integer in [1, 4096]"),
    ("runtime.num_threads=1000", f"runtime.num_threads=1000: this machine has {os.cpu_count()} CPU cores"),
    ("solver.max_iter=-1", "solver.max_iter=-1: must be an integer >= 1"),
    ("solver.max_iter=abc", "solver.max_iter='abc': must be an integer >= 1"),
    ("solver.optimizer.base_lr=nan", "solver.optimizer.base_lr=nan: must be a number > 0"),
    ("solver.lr_scheduler.steps=[2,1]", "solver.lr_scheduler.steps=[2, 1]: must be an increasing list"),
    ("solver.lr_scheduler.steps=[1.5]", "solver.lr_scheduler.steps=[1.5]: must be an increasing list of integers >= 0 or "
     "numbers in [0, 1)"),
    ("solver.epochs=3", "solver.max_iter=2, solver.epochs=3: set exactly one"),
    ("solver.accumulate=3", "solver.accumulate=3: must divide solver.ims_per_batch=2"),
    ("solver.patience=2", "solver.patience=2: early stopping counts evaluations, so it needs periodic evaluation"),
    ("runtime.loggers=[mlfow]", "runtime.loggers=['mlfow']: must be a list of"),
    ("model.roi_heads.score_thresh=1.5", "model.roi_heads.score_thresh=1.5: must be a number in [0, 1]"),
    ("model.backbone.depth=42", "model.backbone.depth=42: must be one of 18, 34, 50, 101, 152"),
    ("input.min_size_test=0", "input.min_size_test=0: must be an integer in [1, 8192]"),
    ("input.min_size_test=100000", "input.min_size_test=100000: must be an integer in [1, 8192]"),
    ("runtime.amp=fp8", "runtime.amp='fp8': must be true or false or one of bf16, fp16"),
    ("data.checks.missing_image=fix", "data.checks.missing_image='fix' is not allowed; choose one of skip_image, fail"),
    ("solver.max_iters=5", "Could not override 'solver.max_iters': Key 'max_iters' is not in struct"),
    ("model=r42_c4", "Could not find 'model/r42_c4'"),
]


@pytest.mark.parametrize("override, message", BAD_VALUES[:-2], ids=[b[0] for b in BAD_VALUES[:-2]])
def test_bad_values_stop_before_any_work(tiny, tmp_path, capsys, override, message):
    """In process, through the tools' own entry (``run_app``: schema check, then the app)."""
    from detectres.apps.cli import run_app
    from detectres.apps.train import train
    from detectres.config import compose_config

    out = tmp_path / "run"
    cfg = compose_config("train", [*tiny, override, f"runtime.output_dir={out}"])
    with pytest.raises(SystemExit) as exit_info:
        run_app("train", train, cfg)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"detectres: error: {message}")
    assert leftovers(out) == []  # nothing was made: no folder, no log, no untrained model_final.pth


@pytest.mark.parametrize("override, message", [BAD_VALUES[2], *BAD_VALUES[-2:]], ids=["max_iter_abc", "typo",
                                                                                       "no_such_model"])
def test_bad_values_on_the_command_line(tiny, tmp_path, override, message):
    out = tmp_path / "run"
    res = run("train", *tiny, override, f"runtime.output_dir={out}")
    assert message in error_line(res)
    assert leftovers(out) == []  # Hydra made the folder; the refused run removed it


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line(tiny, tmp_path):
    res = run("train", *tiny, "runtime.device=cuda", f"runtime.output_dir={tmp_path / 'run'}")
    assert "runtime.device=cuda: no CUDA GPU is available on this machine" in error_line(res)


def test_missing_and_unreadable_files_are_one_line(trained, tmp_path):
    (tmp_path / "text.pth").write_text("hello, not a checkpoint\n")
    calls, messages = zip(
        (("test", f"checkpoint={tmp_path / 'text.pth'}"), "is not a torch checkpoint"),
        (("test", f"checkpoint={tmp_path / 'missing.pth'}"), f"not found: {tmp_path / 'missing.pth'}"),
        (("predict", f"checkpoint={trained / 'model_final.pth'}", f"source={tmp_path / 'nope.jpg'}",
          f"runtime.output_dir={tmp_path / 'p'}"), f"input not found: {tmp_path / 'nope.jpg'}"),
        (("train", "data=custom", f"data.train.image_dir={tmp_path}", f"data.train.ann_file={tmp_path / 'a.json'}",
          f"data.val.image_dir={tmp_path}", f"data.val.ann_file={tmp_path / 'a.json'}",
          f"runtime.output_dir={tmp_path / 'r'}"), f"annotation file not found: {tmp_path / 'a.json'}"),
        (("train", "data=custom"), "data.train.image_dir: missing"),
    )
    for res, message in zip(run_many(*calls), messages):
        assert message in error_line(res)
    assert not (tmp_path / "r").exists()


def test_bad_data_under_a_fail_policy_and_a_malformed_file(tmp_path, tiny):
    images = tmp_path / "imgs"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((64, 64, 3), np.uint8))
    ann = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64},
                      {"id": 2, "file_name": "gone.png", "width": 64, "height": 64}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20]}],
           "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    data = ["data=custom", f"data.train.image_dir={images}", f"data.train.ann_file={tmp_path / 'ann.json'}",
            f"data.val.image_dir={images}", f"data.val.ann_file={tmp_path / 'ann.json'}", "data.num_workers=0"]
    res = run("train", *data, "data.checks.missing_image=fail", f"runtime.output_dir={tmp_path / 'r'}")
    line = error_line(res)
    assert f"{tmp_path / 'ann.json'}: 1 problem(s) with policy 'fail'" in line
    assert "gone.png" in res.stderr and "missing_image" in res.stderr  # each problem listed above the line
    assert not (tmp_path / "r" / "model_final.pth").exists()
    (tmp_path / "ann.json").write_text('{"images": [')
    res = run("train", *data, f"runtime.output_dir={tmp_path / 'r2'}")
    assert f"{tmp_path / 'ann.json'}: malformed JSON at line 1" in error_line(res)


def test_two_trainings_on_one_folder_exactly_one_runs(tiny, tmp_path):
    out = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, TRAIN, *tiny, "solver.max_iter=4", f"runtime.output_dir={out}"],
                              stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], [r[1][-2000:] for r in results]
    loser = results[[p.returncode for p in procs].index(1)]
    assert f"{out} is in use by another run: pid " in loser[1].strip().splitlines()[-1]
    metrics = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [m["iteration"] for m in metrics if "lr" in m] == [0, 1, 2, 3]  # one run's lines, not two interleaved
    assert not (out / ".detectres.lock").exists()  # released at the end


def test_a_killed_runs_lock_is_taken_over_and_its_temp_files_removed(tiny, tmp_path):
    out = tmp_path / "run"
    killed = subprocess.Popen([sys.executable, TRAIN, *tiny, "solver.max_iter=100000", "solver.lr_scheduler.steps=[9]",
                               f"runtime.output_dir={out}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert json.loads((out / ".detectres.lock").read_text())["pid"] == killed.pid  # left behind
    (out / ".detectres-tmp-abcd.pth").write_bytes(b"half a checkpoint")
    (out / ".tmp-1234.pth").write_bytes(b"an older version's half checkpoint")
    res = run("train", *tiny, f"runtime.output_dir={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    assert f"taking over the lock of {out} left by a run that is gone: pid {killed.pid}" in log
    assert "removed 2 unfinished temporary file(s)" in log
    assert not any(f.startswith((".tmp-", ".detectres-tmp-")) for f in os.listdir(out))
    assert (out / "model_final.pth").exists() and not (out / ".detectres.lock").exists()


def test_a_live_holder_is_named_and_the_folder_left_alone(tiny, tmp_path):
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".detectres.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write(json.dumps({"pid": os.getpid(), "host": "here", "started": "now", "command": "pytest"}))
        held.flush()
        res = run("train", *tiny, f"runtime.output_dir={out}")
        assert f"{out} is in use by another run: pid {os.getpid()} on here since now (pytest)" in error_line(res)
    assert sorted(os.listdir(out)) == [".detectres.lock"]  # nothing of the refused run


def test_resume_checks_classes_and_data(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    anns, image_entries = [], []
    for i in range(4):
        img = np.full((96, 96, 3), 40, np.uint8)
        cv2.rectangle(img, (10 + 5 * i, 10), (50 + 5 * i, 60), (200, 30, 30), -1)
        cv2.imwrite(str(images / f"{i}.png"), img)
        image_entries.append({"id": i + 1, "file_name": f"{i}.png", "width": 96, "height": 96})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1 + i % 2, "bbox": [10 + 5 * i, 10, 40, 50]})
    cats = [{"id": 1, "name": "box"}, {"id": 2, "name": "blob"}]
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps({"images": image_entries, "annotations": anns, "categories": cats}))
    data = ["data=custom", f"data.train.image_dir={images}", f"data.train.ann_file={ann_file}",
            f"data.val.image_dir={images}", f"data.val.ann_file={ann_file}", "data.num_workers=0",
            "input.min_size_train=[96]", "input.min_size_test=96"]
    common = [*FAST, *data, f"runtime.output_dir={tmp_path / 'run'}", "solver.checkpoint_period=1"]
    assert run("train", *common).returncode == 0
    os.remove(tmp_path / "run" / "model_final.pth")  # as if killed after the first checkpoint
    (tmp_path / "run" / "last_checkpoint").write_text("model_0000001.pth")
    cats[0]["name"], cats[1]["name"] = "blob", "box"  # same count, other order
    ann_file.write_text(json.dumps({"images": image_entries, "annotations": anns, "categories": cats}))
    res = run("train", *common, "resume=true")
    line = error_line(res)
    assert "cannot resume from" in line and "class_names: ['box', 'blob'] -> ['blob', 'box']" in line
    assert "allow_resume_changes=true" in line and not (tmp_path / "run" / "model_final.pth").exists()
    cats[0]["name"], cats[1]["name"] = "box", "blob"
    anns.append({"id": 9, "image_id": 1, "category_id": 2, "bbox": [60, 60, 20, 20]})  # the data changed
    ann_file.write_text(json.dumps({"images": image_entries, "annotations": anns, "categories": cats}))
    line = error_line(run("train", *common, "resume=true"))
    assert "training data:" in line and "4 annotations" in line and "5 annotations" in line
    res = run("train", *common, "resume=true", "allow_resume_changes=true")
    assert res.returncode == 0 and "resuming from" in res.stdout + res.stderr


INJECT_FULL_DISK = """
import errno, os, runpy, sys
real_fdopen, writes = os.fdopen, [0]
class FullDisk:
    def __init__(self, f): self.f, self.n = f, 0
    def write(self, b):
        self.n += len(b)
        if self.n > 65536: raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(b)
    def __getattr__(self, name): return getattr(self.f, name)
    def __enter__(self): return self
    def __exit__(self, *exc): self.f.close()
def fdopen(fd, mode="r", *args, **kwargs):
    f = real_fdopen(fd, mode, *args, **kwargs)
    if "b" in mode and "w" in mode:
        writes[0] += 1
        if writes[0] >= 2:  # the first checkpoint fits, the second does not
            return FullDisk(f)
    return f
os.fdopen = fdopen
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_full_disk_names_the_file_and_leaves_the_last_good_checkpoint(tiny, tmp_path):
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-c", INJECT_FULL_DISK, TRAIN, *tiny, "solver.max_iter=3",
                          "solver.checkpoint_period=1", f"runtime.output_dir={out}"], capture_output=True, text=True,
                         env=ENV, timeout=300)
    line = error_line(res)
    assert line == f"detectres: error: no space left on device while writing {out / 'model_0000002.pth'}"
    files = os.listdir(out)
    assert not [f for f in files if f.startswith((".tmp-", ".detectres-tmp-"))] and ".detectres.lock" not in files
    assert open(out / "last_checkpoint").read() == "model_0000001.pth"
    assert torch.load(out / "model_0000001.pth", weights_only=True)["iteration"] == 0


def test_the_demo_runs_from_a_model_config_and_weights(trained, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        cv2.imwrite(str(frames / f"{i}.png"), np.full((64, 64, 3), 60 * i, np.uint8))
    res = run("demo", "model=quickstart", f"model.weights={trained / 'model_final.pth'}", f"source={frames}",
              f"output={tmp_path / 'out'}", "display=false")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "processed 2 frames" in res.stdout and sorted(os.listdir(tmp_path / "out")) == ["0.png", "1.png"]


def default_sigint() -> None:
    """Ctrl-C's default action in the child, as from a terminal: a test runner started in the background by a
    non-interactive shell ignores SIGINT, and a child would inherit that (Python keeps an ignored SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_training_exits_130_and_releases_the_folder(tiny, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, TRAIN, *tiny, "solver.max_iter=100000",
                             "solver.lr_scheduler.steps=[99999]", f"runtime.output_dir={out}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**ENV, "PYTHONFAULTHANDLER": "1"}, preexec_fn=default_sigint)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.1)
    masks = [line for line in open(f"/proc/{proc.pid}/status") if line.startswith("Sig")] \
        if os.path.exists(f"/proc/{proc.pid}/status") else []
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # say where it hangs: faulthandler dumps every thread's stack on SIGABRT
        proc.send_signal(signal.SIGABRT)
        _, stderr = proc.communicate(timeout=30)
        pytest.fail(f"no exit 120 s after Ctrl-C; signal masks {''.join(masks)}; stacks:\n{stderr[-6000:]}")
    assert proc.returncode == 130 and stderr.strip().splitlines()[-1] == "detectres: interrupted"
    assert not (out / ".detectres.lock").exists()


def test_training_never_writes_over_a_finished_run_or_its_starting_weights(trained, tiny, tmp_path):
    """Without resume=true or overwrite=true a finished run's folder is refused before any work; starting
    weights that a run would overwrite are refused always; resuming past max_iter says so and leaves the
    folder as it was."""
    import shutil

    from detectres.apps.train import train
    from detectres.config import compose_config

    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    out = f"runtime.output_dir={run_dir}"
    cases = [([out], r"holds a finished run \(model_final.pth\): pass resume=true to continue it, overwrite=true"),
             ([out, f"model.weights={run_dir / 'model_final.pth'}", "overwrite=true"],
              r"model.weights=.*model_final.pth is a checkpoint name in runtime.output_dir=.*which this run would "
              "overwrite"),
             ([out, "resume=true"], r"resume=true: .*model_final.pth is at iteration 1 and the run is 2 steps "
                                    r"long: nothing left to train .* is left as it was")]
    for extra, message in cases:
        with pytest.raises(ValueError, match=message):
            train(compose_config("train", [*tiny, *extra]))
        assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before
    (run_dir / "model_final.pth").unlink()  # an interrupted run: last_checkpoint names model_0000001.pth
    with pytest.raises(ValueError, match=r"holds an interrupted run \(last_checkpoint\)"):
        train(compose_config("train", [*tiny, out]))
    train(compose_config("train", [*tiny, out, "overwrite=true", "vis_images=0"]))  # said explicitly: replaced
    assert (run_dir / "model_final.pth").exists()


@pytest.mark.parametrize("sig, status, word, delay", [(signal.SIGINT, 130, "interrupted", 0.3),
                                                      (signal.SIGTERM, 143, "terminated", 1.5)])
def test_a_signal_while_importing_or_composing_is_one_line(tmp_path, sig, status, word, delay):
    """Ctrl-C or SIGTERM before the tool has even loaded torch or composed its config: the same exit
    status and one line as later, no traceback."""
    proc = subprocess.Popen([sys.executable, TRAIN, f"runtime.output_dir={tmp_path / 'run'}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, preexec_fn=default_sigint)
    time.sleep(delay)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status and stderr.strip() == f"detectres: {word}", stderr[-2000:]
