"""Augmentations as config (configs/augment/): every shipped pipeline keeps boxes valid (inside the image, never
more of them, a flip maps x1 -> W - x2), is deterministic per sample seed, and a bad transform or argument is
one line naming it before any work."""
import numpy as np
import pytest
from omegaconf import OmegaConf

from detectres.config import compose_config
from detectres.data.build import train_transforms
from detectres.data.transforms import apply_transforms, build_augment

AUGMENTS = ["none", "default", "strong", "lsj"]


def scene(rng, h=150, w=200, n=6):
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    x1, y1 = rng.uniform(-5, w - 10, n), rng.uniform(-5, h - 10, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(3, 80, n), y1 + rng.uniform(3, 60, n)], 1)
    boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
    return image, boxes, np.arange(n) % 3


@pytest.mark.parametrize("augment", AUGMENTS)
def test_boxes_stay_inside_never_grow_in_number_and_the_seed_fixes_the_sample(augment):
    transforms = train_transforms(compose_config("train", [f"augment={augment}"]))
    rng = np.random.default_rng(0)
    for seed in range(40):
        image, boxes, labels = scene(rng)
        transforms.set_random_seed(seed)
        out, out_boxes, out_labels = apply_transforms(transforms, image, boxes, labels)
        h, w = out.shape[:2]
        assert len(out_boxes) <= len(boxes) and len(out_labels) == len(out_boxes)
        assert set(out_labels.tolist()) <= set(labels.tolist())
        assert (out_boxes[:, :2] >= 0).all() and (out_boxes[:, 2] <= w + 1e-3).all() and (out_boxes[:, 3] <= h + 1e-3).all()
        assert (out_boxes[:, 2:] > out_boxes[:, :2]).all()
        transforms.set_random_seed(seed)
        again, again_boxes, _ = apply_transforms(transforms, image, boxes, labels)
        assert np.array_equal(again, out) and np.array_equal(again_boxes, out_boxes)  # deterministic per seed


def test_a_flip_maps_x1_to_width_minus_x2():
    rng = np.random.default_rng(1)
    image, boxes, labels = scene(rng)
    flip = build_augment([{"name": "HorizontalFlip", "p": 1.0}])
    out, out_boxes, _ = apply_transforms(flip, image, boxes, labels)
    w = image.shape[1]
    np.testing.assert_allclose(out_boxes[:, 0], w - boxes[:, 2], atol=1e-3)
    np.testing.assert_allclose(out_boxes[:, 2], w - boxes[:, 0], atol=1e-3)
    assert np.array_equal(out, image[:, ::-1])


def test_default_is_the_resize_and_flip_of_before():
    cfg = compose_config("train", [])
    steps = OmegaConf.to_container(cfg.augment.steps, resolve=True)
    assert [s["name"] for s in steps] == ["ResizeShortestEdge", "HorizontalFlip"]
    assert steps[0]["short_edges"] == list(cfg.input.min_size_train) and steps[1]["p"] == cfg.input.random_flip


@pytest.mark.parametrize("override, message", [
    ("augment.steps.1.name=Flop", "augment.steps.1.name='Flop': not an albumentations transform"),
    ("+augment.steps.1.probability=0.5", "augment.steps.1.probability: not an argument of HorizontalFlip (it takes p)"),
    ("augment.steps.1.p=2", "augment.steps.1: HorizontalFlip(p=2) is refused"),
])
def test_a_bad_transform_or_argument_is_one_line_naming_it(override, message):
    from detectres.apps.schemas import validate_tool_config
    from detectres.config.schema import ConfigError

    with pytest.raises(ConfigError) as e:
        validate_tool_config("train", compose_config("train", [override]))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
