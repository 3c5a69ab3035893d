"""What the tools write is checked: a full disk or a read-only folder is one line naming the file, with
no partial file left at the final name (a real 3 MB tmpfs, remounted read-only for the second case)."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from detectres.config import PROJECT_ROOT, compose_config
from detectres.utils.file_io import DiskFullError

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def trained_checkpoint(tiny_trained):
    return os.path.join(tiny_trained, "model_final.pth")


@pytest.fixture()
def small_disk(tmp_path):
    """A 3 MB tmpfs (root can mount one here and in CI; skipped where mounting is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def noise_images(folder, count, size=256):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(folder / f"p{i:02d}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return folder


def leftovers(folder):
    return [p for p in os.listdir(folder) if p.startswith(".detectres-tmp-")]


def test_predict_onto_a_full_or_read_only_disk_is_one_line(trained_checkpoint, tmp_path, small_disk):
    from detectres.apps.predict import predict

    source = noise_images(tmp_path / "photos", 30)  # ~200 KB each as drawn PNGs: 3 MB fills after ~15
    overrides = [f"checkpoint={trained_checkpoint}", f"source={source}", f"runtime.output_dir={small_disk / 'out'}",
                 "runtime.num_threads=1"]
    with pytest.raises(DiskFullError, match=rf"no space left on device while writing {small_disk}/out/p\d\d.png"):
        predict(compose_config("predict", overrides), overrides)
    assert not leftovers(small_disk / "out")
    for f in os.listdir(small_disk / "out"):
        os.remove(small_disk / "out" / f)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    res = subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / "predict.py"), *overrides], capture_output=True,
                         text=True, env=ENV, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stderr[-2000:]
    assert lines[0] == (f"detectres: error: cannot write {small_disk}/out/p00.png: {small_disk}/out is a read-only "
                        "file system")


def test_a_video_onto_a_full_disk_is_one_line_and_leaves_no_file(trained_checkpoint, tmp_path, small_disk):
    src = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 25, (192, 192))
    rng = np.random.default_rng(0)
    for _ in range(150):  # noise compresses badly: ~30 KB a frame, 4.5 MB in all
        writer.write(rng.integers(0, 255, (192, 192, 3), dtype=np.uint8))
    writer.release()
    dst = small_disk / "out.avi"
    res = subprocess.run([sys.executable, str(PROJECT_ROOT / "demo" / "demo.py"), f"checkpoint={trained_checkpoint}",
                          f"source={src}", f"output={dst}", "display=false", "runtime.num_threads=1"],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 1, res.stdout[-1000:] + res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1] == f"detectres: error: no space left on device while writing {dst}"
    assert not dst.exists() and not leftovers(small_disk)


def test_a_runs_files_get_the_users_umask(tiny_trained):
    """Checkpoints, config.yaml, eval.json and last_checkpoint were 0600 (mkstemp); now what open() gives."""
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {}
    for folder, _, files in os.walk(tiny_trained):
        for name in files:
            if name != ".detectres.lock":
                modes[os.path.relpath(os.path.join(folder, name), tiny_trained)] = os.stat(os.path.join(folder, name)).st_mode & 0o777
    assert {"model_final.pth", "config.yaml", "eval.json", "last_checkpoint"} <= set(modes)
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_evaluation_onto_a_full_disk_is_one_line_naming_the_file(tiny_trained, shapes_overrides, small_disk, tmp_path):
    """Whichever file the disk fills on (results JSON, a plot, TensorBoard's events from its own thread),
    one line names it and no thread prints a traceback. The three fill levels run side by side, each on
    its own 3 MB disk."""
    checkpoint = os.path.join(tiny_trained, "model_final.pth")
    root = next(o.split("=", 1)[1] for o in shapes_overrides if o.startswith("data.root="))
    disks = [small_disk]
    for k in (1, 2):
        disk = tmp_path / f"small{k}"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], check=True)
        disks.append(disk)
    try:
        procs = []
        for disk, free_kb in zip(disks, (40, 100, 160)):
            stats = os.statvfs(disk)
            (disk / "fill").write_bytes(bytes(stats.f_bavail * stats.f_frsize - free_kb * 1024))
            procs.append(subprocess.Popen(
                [sys.executable, str(PROJECT_ROOT / "tools" / "test_net.py"), f"checkpoint={checkpoint}",
                 f"runtime.output_dir={disk / 'eval'}", "runtime.num_threads=1", f"data.val.image_dir={root}/val",
                 f"data.val.ann_file={root}/annotations/instances_val.json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV))
        for disk, proc in zip(disks, procs):
            _, stderr = proc.communicate(timeout=300)
            errors = [ln for ln in stderr.replace("\r", "\n").splitlines() if "error" in ln.lower() or "Traceback" in ln]
            assert proc.returncode == 1 and len(errors) == 1, stderr[-3000:]
            assert errors[0].startswith(f"detectres: error: no space left on device while writing {disk}/eval/"), errors
    finally:
        for disk in disks[1:]:
            subprocess.run(["umount", "-l", str(disk)], check=False)
