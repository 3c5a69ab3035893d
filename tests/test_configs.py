import glob
import os

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from detectres.config import CONFIG_DIR, build_model, compose_config
from detectres.data.build import build_dataset
from detectres.modeling.detector import FasterRCNN


def group_options(group):
    return sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(str(CONFIG_DIR / group / "*.yaml")))


@pytest.mark.parametrize("model", group_options("model"))
def test_every_model_config_instantiates(model):
    cfg = compose_config("train", [f"model={model}"])
    net = build_model(cfg.model, num_classes=7)
    assert isinstance(net, FasterRCNN) and net.roi_heads.box_predictor.cls_score.out_features == 8
    assert cfg.input.min_size_test > 0


@pytest.mark.parametrize("solver", group_options("solver"))
def test_every_solver_config_has_detectron2_keys(solver):
    s = compose_config("train", [f"solver={solver}"]).solver
    for key in ("max_iter", "base_lr", "ims_per_batch", "steps", "warmup_iters", "checkpoint_period"):
        assert key in s
    assert list(s.steps) == sorted(s.steps) and s.steps[-1] < s.max_iter


def test_every_data_config_composes_and_instantiates(shapes_overrides, tmp_path):
    from hydra.utils import get_class

    from detectres.data.checks import PROBLEM_KINDS
    from detectres.data.datasets.base import DetectionDataset

    assert group_options("data") == ["coco", "coco8", "custom", "shapes", "voc07", "voc0712"]
    for data in group_options("data"):
        cfg = compose_config("train", [f"data={data}"])
        for split in ("train", "val"):
            assert issubclass(get_class(cfg.data[split]._target_), DetectionDataset)
            assert cfg.data[split].checks == cfg.data.checks
        assert get_class(cfg.data.evaluator._target_).__name__ in ("COCOEvaluator", "VOCEvaluator")
        # the YAML lists every problem kind with the default the code has
        checks = OmegaConf.to_container(cfg.data.checks)
        assert checks.pop("scan") == "exists"
        assert checks == {kind: spec.policies[0] for kind, spec in PROBLEM_KINDS.items()}
    # the ones with files here instantiate for real
    assert len(build_dataset(compose_config("train", ["data=coco8"]), "val")) == 4
    assert len(build_dataset(compose_config("train", shapes_overrides), "train")) == 24
    custom = compose_config("train", ["data=custom"])
    with pytest.raises(Exception, match="Missing mandatory value"):
        OmegaConf.to_container(custom.data.train, resolve=True, throw_on_missing=True)


def test_top_level_configs_compose():
    needs = {"train": [], "eval": [], "predict": ["checkpoint=x.pth"], "demo": ["input=0"], "benchmark": [],
             "check_data": [], "train_benchmark": [],
             "ablation": ["checkpoint=a.pth", "context_checkpoint=b.pth"]}
    names = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(str(CONFIG_DIR / "*.yaml")))
    assert names == sorted(needs)
    for name in names:
        cfg = compose_config(name, needs[name])
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # every value resolves
        assert "output_dir" in cfg or name in ("demo", "check_data")


def test_unknown_key_fails_with_hydra_error():
    with pytest.raises(ConfigCompositionException, match="solver.max_iters"):
        compose_config("train", ["solver.max_iters=5"])
    with pytest.raises(ConfigCompositionException, match="Could not find 'model/r42_c4'"):
        compose_config("train", ["model=r42_c4"])


def test_overrides_reach_the_model():
    cfg = compose_config("train", ["model=r50_c4", "model.roi_heads.pooler.kind=pool",
                                   "model.rpn.post_nms_topk_test=123", "model.backbone.depth=101"])
    net = build_model(cfg.model, num_classes=3)
    assert net.roi_heads.pooler.kind == "pool" and net.rpn.post_nms_topk[False] == 123
    assert len(net.backbone.res4) == 23


@pytest.mark.parametrize("test", group_options("test"))
def test_every_test_config_instantiates_a_wrapper(test):
    from hydra.utils import instantiate

    from detectres.modeling.tta import TestTimeDetector

    cfg = compose_config("eval", [f"test={test}"])
    model = build_model(cfg.model, num_classes=3)
    wrapper = instantiate(cfg.test)(model=model, min_size=cfg.input.min_size_test, max_size=cfg.input.max_size_test)
    assert isinstance(wrapper, TestTimeDetector)
    assert (wrapper.refine is not None) == (test in ("refine", "paper"))
    assert (wrapper.multiscale is not None) == (test in ("multiscale", "paper"))
    assert (wrapper.tta is not None) == (test == "tta")


def test_reapplied_deletion_removes_the_key():
    from detectres.config import reapply_overrides

    base = OmegaConf.create({"data": {"evaluator": {"_target_": "x.VOCEvaluator", "metric": "area"}}, "seed": 1})
    composed = OmegaConf.create({"data": {"evaluator": {"_target_": "x.COCOEvaluator"}}, "seed": 1})
    out = reapply_overrides(base, composed, ["data.evaluator._target_=x.COCOEvaluator", "~data.evaluator.metric"])
    assert OmegaConf.to_container(out.data.evaluator) == {"_target_": "x.COCOEvaluator"}
