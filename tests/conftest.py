import os

import pytest
import torch

# Tests share 2 cores with nothing else; one torch thread keeps them predictable.
torch.set_num_threads(1)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(TESTS_DIR, "data")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """A small embedded-shapes dataset (24 train / 8 val) generated once per session."""
    from detectres.data.datasets.shapes import ensure_shapes_dataset

    root = tmp_path_factory.mktemp("shapes") / "shapes"
    return ensure_shapes_dataset(str(root), num_train=24, num_val=8, size=128, seed=1)


@pytest.fixture(scope="session")
def shapes_overrides(tiny_shapes):
    return [f"data.root={tiny_shapes}", "data.generate.num_train=24", "data.generate.num_val=8",
            "data.generate.size=128", "data.generate.seed=1", "data.num_workers=0"]


def train_tiny(tmp_path_factory, shapes_overrides, model: str) -> str:
    from detectres.apps.train import train
    from detectres.config import compose_config

    out = str(tmp_path_factory.mktemp(f"trained_{model}"))
    train(compose_config("train", [f"model={model}", *shapes_overrides, f"runtime.output_dir={out}",
                                   "solver.ims_per_batch=2", "solver.max_iter=2", "solver.lr_scheduler.warmup_iters=1",
                                   "solver.lr_scheduler.steps=[1]", "vis_images=0", "runtime.num_threads=1"]))
    return out


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory, shapes_overrides):
    """The output folder of a 2-iteration quickstart run on the tiny shapes set (trained once per session;
    copy its files before changing them)."""
    return train_tiny(tmp_path_factory, shapes_overrides, "quickstart")


@pytest.fixture(scope="session")
def tiny_trained_fpn(tmp_path_factory, shapes_overrides):
    """The same for the quickstart FPN (``model=quickstart_fpn``), through the training application."""
    return train_tiny(tmp_path_factory, shapes_overrides, "quickstart_fpn")


@pytest.fixture()
def all_cores():
    """A test that is one long stretch of arithmetic in this process (a Detectron2 fixture step) uses both
    cores: the suite runs one test at a time, so the second core is otherwise idle."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
    torch.set_num_threads(1)
