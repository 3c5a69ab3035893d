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
