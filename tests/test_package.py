"""A real package: the wheel carries the configs and the sample data, installs into a clean virtual
environment, and its console command trains and evaluates from a folder outside the checkout."""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from detectres.apps.commands import COMMANDS
from detectres.config import PROJECT_ROOT


def run(cmd, **kwargs):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("src")
    # build from a copy of the working tree, so the checkout gets no build/ or egg-info folders
    shutil.copytree(PROJECT_ROOT, build / "detectres", ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "outputs", "__pycache__", ".pytest_cache", ".whl"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
         str(build / "detectres")])
    (path,) = out.glob("detectres-*.whl")
    return path


def test_the_wheel_carries_configs_samples_and_commands(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "detectres/configs/train.yaml" in names and "detectres/configs/model/r101_c4.yaml" in names
    assert "detectres/samples/coco8/annotations/instances_val.json" in names
    assert "detectres/samples/images/bus.jpg" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    listed = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert all(f"{name} = detectres.apps.commands:" in listed for name in COMMANDS)


def test_installed_console_command_trains_from_an_unrelated_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    # the venv sees this machine's torch & co. (no download) but gets detectres only from the wheel
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run([str(python), "-c", "import detectres.config as c; print(c.CONFIG_DIR); print(c.DATA_DIR)"],
                cwd=elsewhere).stdout.split()
    assert all(p.startswith(str(venv)) for p in where), where  # the installed copy, not the checkout
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    res = run(["detectres-train", f"data.root={tmp_path / 'shapes'}", "data.generate.num_train=16",
               "data.generate.num_val=4", "data.generate.size=96", "solver.max_iter=2", "solver.ims_per_batch=2",
               "solver.lr_scheduler.warmup_iters=1", "solver.lr_scheduler.steps=[1]", "vis_images=0",
               "runtime.num_threads=1", f"runtime.output_dir={tmp_path / 'run'}"], cwd=elsewhere, env=env)
    assert "bbox |" in res.stdout and (tmp_path / "run" / "model_final.pth").is_file()
    res = run(["detectres-test", f"checkpoint={tmp_path / 'run' / 'model_final.pth'}", "vis_images=0",
               f"runtime.output_dir={tmp_path / 'eval'}", "runtime.num_threads=1"], cwd=elsewhere, env=env)
    assert (tmp_path / "eval" / "eval.json").is_file()
