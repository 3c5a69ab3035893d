"""A real release: ``python -m build`` makes the sdist and, from it, the wheel; both pass ``twine check``;
the wheel carries the configs, the generated samples, the licence and the notices and no third-party
photo; the sdist, installed into a clean virtual environment, trains and evaluates from an unrelated
folder with its console commands."""
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from detectres import __version__
from detectres.apps.commands import COMMANDS
from detectres.config import PROJECT_ROOT
from test_licence import NOTICE, SAMPLES, listed


def run(cmd, **kwargs):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(sdist, wheel) as ``python -m build`` makes them: the wheel is built from the unpacked sdist, so a
    file the sdist forgets fails here."""
    out = tmp_path_factory.mktemp("dist")
    build = tmp_path_factory.mktemp("src")
    # build from a copy of the working tree, so the checkout gets no build/ or egg-info folders
    shutil.copytree(PROJECT_ROOT, build / "detectres", ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "outputs", "__pycache__", ".pytest_cache", ".whl", "mlruns", "wandb"))
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(build / "detectres")])
    (sdist,), (wheel,) = out.glob("detectres-*.tar.gz"), out.glob("detectres-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def wheel(dists):
    return dists[1]


def test_build_makes_an_sdist_and_a_wheel_that_pass_twine_check(dists):
    sdist, wheel = dists
    assert sdist.name == f"detectres-{__version__}.tar.gz" and wheel.name.startswith(f"detectres-{__version__}-py3")
    res = run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)])
    assert res.stdout.count("PASSED") == 2, res.stdout
    names = tarfile.open(sdist).getnames()
    root = f"detectres-{__version__}/"
    for kept in ("LICENSE", "NOTICE", "THIRD_PARTY.md", "CHANGELOG.md", "setup.py", "MANIFEST.in",
                 "configs/train.yaml", f"{SAMPLES}/annotations/instances_val.json"):
        assert root + kept in names, kept
    # the repository's test data made by others stays out of the sdist too
    assert not [n for n in names if n.startswith((root + "tests/data/coco8", root + "tests/data/images",
                                                   root + "tests/fixtures"))]


def test_the_wheel_states_its_licence_and_ships_only_listed_samples(wheel):
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    info = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = archive.read(info).decode()
    assert re.search(r"^License-Expression: Apache-2.0$", metadata, re.M), metadata[:1500]
    assert "Requires-Python: >=3.10" in metadata and "Keywords:" in metadata
    for name in ("LICENSE", "NOTICE", "THIRD_PARTY.md"):
        assert info.replace("METADATA", f"licenses/{name}") in names
    shipped = {n.replace("detectres/samples/shapes8", SAMPLES) for n in names if n.startswith("detectres/samples/")}
    assert shipped == {p for p, wheel in listed(NOTICE.read_text()).items() if wheel}
    assert not [n for n in names if n.endswith(".jpg")]  # no photo at all


def test_the_wheel_carries_configs_samples_and_commands(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "detectres/configs/train.yaml" in names and "detectres/configs/model/r101_c4.yaml" in names
    assert "detectres/configs/data/shapes8.yaml" in names
    assert "detectres/samples/shapes8/annotations/instances_val.json" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    listed_commands = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert all(f"{name} = detectres.apps.commands:" in listed_commands for name in COMMANDS)


def test_installed_sdist_trains_and_evaluates_from_an_unrelated_folder(dists, tmp_path):
    venv = tmp_path / "venv"
    # the venv sees this machine's torch & co. (no download) but gets detectres only from the sdist, built
    # into a wheel by pip there
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--no-build-isolation", "-q", str(dists[0])])
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
    # evaluated on the shipped samples (the same three classes), which every install has
    res = run(["detectres-test", f"checkpoint={tmp_path / 'run' / 'model_final.pth'}", "data=shapes8", "vis_images=0",
               f"runtime.output_dir={tmp_path / 'eval'}", "runtime.num_threads=1"], cwd=elsewhere, env=env)
    assert (tmp_path / "eval" / "eval.json").is_file() and "4 images" in res.stdout + res.stderr, res.stdout[-1500:]
