"""The config tree: every config composes and instantiates, overrides reach their targets, the tree
mirrors the constructors (typed test-time add-ons, solver nodes), and old checkpoint configs upgrade."""
import dataclasses
import glob
import inspect
import os

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from detectres.apps.schemas import validate_tool_config
from detectres.config import CONFIG_DIR, carry_overrides, compose_config
from detectres.data.build import build_dataset
from detectres.engine.solver import WarmupMultiStepLR
from detectres.modeling.build import build_model
from detectres.modeling.detector import FasterRCNN
from detectres.modeling.tta import BoxRefinement, ImageTTA, MultiScaleTesting, TestTimeDetector


def group_options(group):
    return sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(str(CONFIG_DIR / group / "*.yaml")))


@pytest.mark.parametrize("model", group_options("model"))
def test_every_model_config_instantiates(model):
    cfg = compose_config("train", [f"model={model}"])
    net = build_model(cfg.model, num_classes=7)
    assert isinstance(net, FasterRCNN) and net.roi_heads.box_predictor.cls_score.out_features == 8
    # the backbone's strides reach the anchors and the poolers (nothing in YAML keeps them in step)
    if "fpn" in model:
        assert net.rpn.anchor_generator.strides == net.backbone.strides == [4, 8, 16, 32, 64]
        assert [p.spatial_scale for p in net.roi_heads.pooler.levels] == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    else:
        assert net.rpn.anchor_generator.strides == [net.backbone.stride] == [16]
        assert net.roi_heads.pooler.spatial_scale == 1.0 / 16
    assert cfg.input.min_size_test == (192 if model.startswith("quickstart") else 800)


def test_the_input_group_follows_the_model_and_the_command_line():
    assert compose_config("train", ["model=r50_c4"]).input.interpolation == "pil_bilinear"
    assert compose_config("train", ["model=quickstart"]).input.min_size_train == [160, 176, 192, 208, 224]
    assert compose_config("train", ["model=r50_c4", "input=quickstart"]).input.min_size_test == 192
    assert compose_config("eval", ["model=r101_c4", "input.min_size_test=600"]).input.min_size_test == 600


DETECTRON2_STEPS = {"coco_1x": [60000, 80000], "coco_3x": [210000, 250000], "voc": [12000, 16000],
                    "quickstart": [750, 900]}


@pytest.mark.parametrize("solver", group_options("solver"))
def test_every_solver_config_builds_its_optimizer_and_schedule(solver):
    """The schedules' steps are fractions of the run; at the shipped lengths they are Detectron2's iterations."""
    import torch

    s = compose_config("train", [f"solver={solver}"]).solver
    for key in ("max_iter", "epochs", "ims_per_batch", "checkpoint_period", "eval_period", "clip_grad_norm", "ema"):
        assert key in s
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optimizer = instantiate(s.optimizer)(model)
    scheduler = instantiate(s.lr_scheduler)(optimizer, max_iter=s.max_iter)
    assert isinstance(scheduler, WarmupMultiStepLR) and scheduler.steps == DETECTRON2_STEPS[solver]
    assert optimizer.param_groups[0]["initial_lr"] == s.optimizer.base_lr
    assert [g["weight_decay"] for g in optimizer.param_groups] == [s.optimizer.weight_decay,
                                                                    s.optimizer.weight_decay_norm]


@pytest.mark.parametrize("schedule", group_options("solver/lr_scheduler"))
def test_every_lr_schedule_warms_up_then_decays_over_the_run(schedule):
    import torch

    cfg = compose_config("train", [f"solver/lr_scheduler={schedule}", "solver.max_iter=100",
                                   "solver.lr_scheduler.warmup_iters=10"])
    validate_tool_config("train", cfg)
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = instantiate(cfg.solver.lr_scheduler)(optimizer, max_iter=100)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.001) and 0.85 < lrs[10] <= 1.0 and max(lrs) == lrs[10]
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.05


def test_every_data_config_composes_and_instantiates(shapes_overrides, tmp_path):
    from detectres.data.checks import PROBLEM_KINDS
    from detectres.data.datasets.base import DetectionDataset

    assert group_options("data") == ["coco", "coco8", "custom", "shapes", "shapes8", "voc07", "voc0712", "yolo"]
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
    # VOC 07+12 inherits 07 and changes only the training image sets
    voc07, voc0712 = (OmegaConf.to_container(compose_config("train", [f"data={d}"]).data) for d in ("voc07", "voc0712"))
    assert voc0712["train"].pop("image_sets") == ["VOC2007/trainval", "VOC2012/trainval"]
    assert voc07["train"].pop("image_sets") == ["VOC2007/trainval"] and voc07 == voc0712
    # the ones with files here instantiate for real
    assert len(build_dataset(compose_config("train", ["data=coco8"]), "val")) == 4
    assert len(build_dataset(compose_config("train", ["data=shapes8"]), "train")) == 4
    assert len(build_dataset(compose_config("train", shapes_overrides), "train")) == 24
    custom = compose_config("train", ["data=custom"])
    with pytest.raises(Exception, match="Missing mandatory value"):
        OmegaConf.to_container(custom.data.train, resolve=True, throw_on_missing=True)


TOP_LEVEL = {"train": [], "eval": [], "predict": [], "demo": ["source=0"], "benchmark": [], "check_data": [],
             "train_benchmark": [], "ablation": ["checkpoint=a.pth", "context_checkpoint=b.pth"]}


def test_top_level_configs_compose_with_one_hydra_settings_group():
    names = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(str(CONFIG_DIR / "*.yaml")))
    assert names == sorted(TOP_LEVEL)
    for name in names:
        cfg = compose_config(name, TOP_LEVEL[name])
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # every value resolves
        text = (CONFIG_DIR / f"{name}.yaml").read_text()
        assert "\nhydra:" not in text and ("- hydra: train" if name == "train" else "- hydra: tool") in text
        if name != "check_data":  # every tool that runs a model takes its runtime from one node
            assert set(cfg.runtime) == {"output_dir", "device", "num_threads", "amp", "deterministic",
                                        "dist_timeout_s", "loggers"}


def test_unknown_key_fails_with_hydra_error():
    with pytest.raises(ConfigCompositionException, match="solver.max_iters"):
        compose_config("train", ["solver.max_iters=5"])
    with pytest.raises(ConfigCompositionException, match="Could not find 'model/r42_c4'"):
        compose_config("train", ["model=r42_c4"])


def test_overrides_reach_the_model():
    cfg = compose_config("train", ["model=r50_c4", "model.roi_heads.pooler.kind=pool",
                                   "model.rpn.post_nms_topk_test=123", "model.backbone.depth=101"])
    net = build_model(cfg.model, num_classes=3)
    assert net.roi_heads.pooler.kind == "pool" and net.rpn.topk_test == (6000, 123)
    assert len(net.backbone.res4) == 23


ADDONS = {"refine": BoxRefinement, "multiscale": MultiScaleTesting, "tta": ImageTTA}


@pytest.mark.parametrize("test", group_options("test"))
def test_every_test_config_instantiates_typed_addons(test):
    cfg = compose_config("eval", [f"test={test}"])
    model = build_model(cfg.model, num_classes=3)
    wrapper = instantiate(cfg.test)(model=model, min_size=cfg.input.min_size_test, max_size=cfg.input.max_size_test)
    assert isinstance(wrapper, TestTimeDetector)
    expected = {"baseline": (), "refine": ("refine",), "multiscale": ("multiscale",), "tta": ("tta",),
                "paper": ("refine", "multiscale")}[test]
    for name, cls in ADDONS.items():
        value = getattr(wrapper, name)
        assert (isinstance(value, cls) if name in expected else value is None), name


@pytest.mark.parametrize("name", sorted(ADDONS))
def test_addon_yaml_shows_the_signature_defaults(name):
    """The add-ons' defaults live in their signatures; the YAML shows the same values."""
    node = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "test" / "addon" / f"{name}.yaml"))
    cls = ADDONS[name]
    assert node.pop("_target_") == f"{cls.__module__}.{cls.__name__}"
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in node.items()} == defaults


def test_no_get_with_default_on_composed_configs():
    """Every key a tool reads exists in the YAML, so a renamed key fails loudly instead of defaulting."""
    import detectres

    root = os.path.dirname(detectres.__file__)
    offenders = []
    for path in glob.glob(os.path.join(root, "**", "*.py"), recursive=True):
        for i, line in enumerate(open(path), 1):
            if "cfg" in line and ".get(" in line.split("cfg", 1)[1]:
                offenders.append(f"{os.path.relpath(path, root)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_carried_overrides_replace_set_and_delete():
    base = OmegaConf.create({"data": {"evaluator": {"_target_": "x.VOCEvaluator", "metric": "area"}}, "seed": 1})
    composed = OmegaConf.create({"data": {"evaluator": {"_target_": "x.COCOEvaluator"}}, "seed": 5})
    out = carry_overrides(base, composed, ["data.evaluator._target_=x.COCOEvaluator", "~data.evaluator.metric",
                                           "seed=5"])
    assert OmegaConf.to_container(out) == {"data": {"evaluator": {"_target_": "x.COCOEvaluator"}}, "seed": 5}


def test_a_format_1_checkpoint_config_upgrades_and_builds():
    """Checkpoints written before the backbone supplied the stride kept it in the config (and, like every
    config stored before format 3, the shipped YAML's interpolations)."""
    from detectres.config import read_stored_config

    old = OmegaConf.to_container(compose_config("train", ["model=quickstart", "runtime.output_dir=x"]), resolve=False)
    old.pop("config_format", None)
    old.pop("augment")  # composed unresolved as the YAML is now; configs stored then had no augment node
    old["model"]["rpn"]["anchor_generator"].pop("_partial_")
    old["model"]["rpn"]["anchor_generator"]["stride"] = 16
    old["model"]["roi_heads"]["pooler"].pop("_partial_")
    old["model"]["roi_heads"]["pooler"]["spatial_scale"] = 0.0625
    del old["data"]["class_names"]
    new = read_stored_config(old, "format-1 checkpoint")
    net = build_model(new["model"], num_classes=3)
    assert net.rpn.anchor_generator.strides == [16] and new["data"]["class_names"] is None
    assert "stride" in old["model"]["rpn"]["anchor_generator"]  # the stored dict itself is left as read
    assert inspect.signature(type(net.roi_heads.pooler)).parameters["spatial_scale"].default is inspect.Parameter.empty


def test_the_oldest_checkpoint_configs_get_the_defaults_their_code_assumed():
    from detectres.config import read_stored_config

    old = OmegaConf.to_container(compose_config("train", ["model=quickstart", "runtime.output_dir=x"]), resolve=False)
    for key in ("config_format", "augment"):  # (no augment node then)
        old.pop(key, None)
    del old["input"]["interpolation"], old["data"]["evaluator"], old["data"]["generate"], old["data"]["checks"]
    for split in ("train", "val"):
        del old["data"][split]["checks"]
    new = read_stored_config(old, "oldest checkpoint")
    from detectres.config.schema import Data
    from detectres.config.validation import validate

    validate(new["data"], Data, "data")  # the upgraded recipe passes the schema
    assert new["input"]["interpolation"] == "bilinear" and new["data"]["generate"] is None
    assert new["data"]["evaluator"] == {"_target_": "detectres.evaluation.coco.COCOEvaluator", "_partial_": True}


def test_composing_inside_another_hydra_app_leaves_its_state(tmp_path):
    """The Python API composes detectres' configs; a user's own @hydra.main app keeps its Hydra config."""
    import subprocess
    import sys

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mine.yaml").write_text("x: 1\n")
    (tmp_path / "app.py").write_text(
        "import hydra\nfrom hydra.core.global_hydra import GlobalHydra\n"
        "from hydra.core.hydra_config import HydraConfig\n"
        "from detectres.config import compose_config\n"
        "@hydra.main(config_path='conf', config_name='mine', version_base='1.3')\n"
        "def main(cfg):\n"
        "    cfg2 = compose_config('predict', ['model=r50_c4'])\n"
        "    print(HydraConfig.get().job.name, GlobalHydra.instance().is_initialized(), cfg2.input.min_size_test,\n"
        "          HydraConfig.get().runtime.choices.get('model'))\n"
        "main()\n")
    res = subprocess.run([sys.executable, "app.py", "hydra.run.dir=.", "hydra.output_subdir=null"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["app", "True", "800", "None"]


@pytest.mark.parametrize("name", sorted(TOP_LEVEL))
def test_every_shipped_config_passes_the_schema(name):
    """No false alarms: every top-level config, and every option of every group, validates as shipped."""
    from detectres.apps.schemas import validate_tool_config

    validate_tool_config(name, compose_config(name, TOP_LEVEL[name]))
    if name in ("train", "eval"):
        groups = {"model": group_options("model"), "data": [d for d in group_options("data") if d != "custom"],
                  "solver": group_options("solver") if name == "train" else [],
                  "test": group_options("test") if name == "eval" else []}
        for group, options in groups.items():
            for option in options:
                validate_tool_config(name, compose_config(name, [f"{group}={option}"]))


def test_the_schema_names_the_key_the_value_and_what_is_allowed():
    from detectres.apps.schemas import validate_tool_config
    from detectres.config.schema import ConfigError

    cases = {
        "+model.rpn.nms=0.5": "model.rpn.nms: not a parameter of detectres.modeling.rpn.RPN",
        "model.rpn.anchor_generator.offset=2": "model.rpn.anchor_generator.offset=2: must be a number in [0, 1]",
        "model.roi_heads.pooler.kind=max": "model.roi_heads.pooler.kind='max': must be one of align, pool",
        "model.backbone.norm=LN": "model.backbone.norm='LN': must be one of FrozenBN, BN, GN",
        "solver.optimizer.momentum=1.5": "solver.optimizer.momentum=1.5: must be a number in [0, 1]",
        "runtime.num_threads=0": "runtime.num_threads=0: must be an integer in [1, 4096] or null",
        "runtime.device=gpu": "runtime.device='gpu': must be one of auto, cpu, cuda, cuda:N, mps",
        "input.random_flip=2": "input.random_flip=2: must be a number in [0, 1]",
        "data.checks.box_outside_image=ignore": "data.checks.box_outside_image='ignore' is not allowed",
        "+seeds=3": "seeds: unknown key",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError) as err:
            validate_tool_config("train", compose_config("train", [override]))
        assert str(err.value).startswith(message), (override, str(err.value))
    with pytest.raises(ConfigError, match=r"^test.multiscale: multiscale.proposal_scale 700 must be one of"):
        validate_tool_config("eval", compose_config("eval", ["test=multiscale", "test.multiscale.proposal_scale=700"]))


def test_a_node_where_a_node_belongs():
    """null or a plain value where a constructor expects a config node is named, not found at build time."""
    from detectres.apps.schemas import validate_tool_config
    from detectres.config.schema import ConfigError

    cases = {"data.evaluator=null": "data.evaluator=null: must be a config node",
             "model.backbone=resnet50": "model.backbone='resnet50': must be a Backbone config node",
             "model.rpn.matcher=null": "model.rpn.matcher=null: must be a Matcher config node",
             "model.rpn.matcher.labels=[0,1]": "model.rpn.matcher: a Matcher needs one more label than thresholds",
             "runtime.output_dir=null": "runtime.output_dir=null: training needs a folder"}
    for override, message in cases.items():
        with pytest.raises(ConfigError) as err:
            validate_tool_config("train", compose_config("train", [override]))
        assert str(err.value).startswith(message), (override, str(err.value))
    # a tool that does not read the training split lets it stay unset
    validate_tool_config("eval", compose_config("eval", ["data=custom", "data.val.image_dir=d", "data.val.ann_file=f"]))
    with pytest.raises(ConfigError, match=r"^data.val.image_dir: missing"):
        validate_tool_config("eval", compose_config("eval", ["data=custom"]))
    # a checkpoint brings its own data paths (a data=custom model evaluated with checkpoint=X alone)
    for tool in ("eval", "predict"):
        validate_tool_config(tool, compose_config(tool, ["data=custom", "checkpoint=run/model_final.pth"]))
    with pytest.raises(ConfigError, match=r"^data.val.image_dir: missing"):
        validate_tool_config("predict", compose_config("predict", ["data=custom", "model.weights=w.pth"]))
