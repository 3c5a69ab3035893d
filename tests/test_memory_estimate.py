"""The batch-memory check: a cheap lower bound on a training batch's activations, refused in one line
before any work when the machine cannot hold it."""
import os

import pytest
import torch

from detectres.apps.train import train
from detectres.config import compose_config
from detectres.engine import memory
from detectres.weights.restore import restore_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = compose_config("train", ["model=quickstart_fpn"])  # trainable BatchNorm (its statistics move in training)
    m = restore_model(cfg, class_names=["a", "b"], strict=False).model
    return m.train()


def test_the_estimate_is_linear_in_the_pixels_and_leaves_the_model_as_it_was(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predicted = memory.activation_bytes(model, 256 * 256)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched
    measured = memory.saved_bytes(model.backbone, 256, torch.device("cpu"), None)
    assert predicted > 0 and abs(predicted - measured) / measured < 0.02


def test_a_batch_the_machine_cannot_hold_is_refused_before_work(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 4 << 20)  # 4 MB
    out = tmp_path / "out"
    cfg = compose_config("train", [f"runtime.output_dir={out}", "solver.max_iter=2", "runtime.num_threads=1",
                                   "data.num_workers=0", "vis_images=0"])
    with pytest.raises(ValueError, match=r"solver.ims_per_batch=8: 8 image\(s\) at once need at least .* GB for "
                                         r"activations \(0.03 Mpx each, the smallest a training image can be\) but "
                                         "this machine has 0.0 GB available: lower solver.ims_per_batch"):
        train(cfg)
    assert not os.path.exists(out / "metrics.jsonl") and not os.path.exists(out / "model_final.pth")


def test_the_smallest_image_is_square_at_the_shortest_side_or_the_most_elongated_at_the_cap():
    assert memory.smallest_image_pixels([640, 800], 1333, [4 / 3, 3 / 4]) == 640 * 640
    assert memory.smallest_image_pixels([800], 800, [4 / 3]) == 480_000  # 600x800: the cap binds
    assert memory.smallest_image_pixels([800], 1333, [1 / 5]) == int(1333 * 1333 / 5)
