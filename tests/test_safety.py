"""A checkpoint's stored config is data, never code: a crafted file that would make Hydra import and
call something is refused, naming the key, before anything is built - through every entry point."""
import copy
import os
import pickle
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from detectres import Detector
from detectres.apps.demo.app import run_demo
from detectres.apps.evaluate import evaluate
from detectres.apps.predict import predict
from detectres.apps.train import train
from detectres.config import PROJECT_ROOT, UnsafeConfigError, check_stored_config, checkpoint_config, compose_config
from detectres.modeling.build import build_model

MARKER = "pwned.txt"


def evil_node(marker) -> dict:
    """Instantiating this creates ``marker``: what an attacker's node would do instead."""
    return {"_target_": "builtins.open", "file": str(marker), "mode": "w"}


def escaped_payload(m) -> str:
    """The reported attack: an escaped interpolation that Hydra's resolution unescapes and then runs."""
    return "\\${oc.create:{_target_: builtins.open, file: '" + str(m) + "', mode: w}}"


def put(node: dict, **values) -> None:
    node.update(values)


# where the crafted node goes, and the key the refusal must name
CRAFTS = {
    "model": (lambda c, m: put(c["model"], backbone=evil_node(m)), "model.backbone._target_"),
    "dataset": (lambda c, m: put(c["data"]["val"], checks=evil_node(m)), "data.val.checks._target_"),
    "generator": (lambda c, m: put(c["data"], generate=evil_node(m)), "data.generate._target_"),
    "evaluator": (lambda c, m: put(c["data"]["evaluator"], metric=evil_node(m)), "data.evaluator.metric._target_"),
    "test_time": (lambda c, m: put(c, test={"_target_": "detectres.modeling.tta.TestTimeDetector",
                                           "_partial_": True, "refine": evil_node(m)}), "test.refine._target_"),
    "args": (lambda c, m: put(c["model"], backbone={"_target_": "builtins.open", "_args_": [str(m), "w"]}),
             "model.backbone"),
    "resolver": (lambda c, m: put(c["model"], backbone=f"${{oc.create:{{_target_: builtins.open, file: '{m}', mode: w}}}}"),
                 "sets model.backbone: "),
    "interpolated_target": (lambda c, m: put(c["model"]["backbone"], _target_="${data.name}")
                            or put(c["data"], name="builtins.open"), "model.backbone._target_"),
    # a detectres function that writes files, away from the one place it belongs (data.generate)
    "misplaced_generator": (lambda c, m: put(c["model"], backbone={
        "_target_": "detectres.data.datasets.shapes.ensure_shapes_dataset", "root": str(m)}),
        "model.backbone._target_"),
    "env_secret": (lambda c, m: put(c["data"]["val"], image_dir="/x/${oc.env:SECRET_TOKEN}"), "data.val.image_dir"),
    # escaped, doubly escaped and nested interpolations, oc.decode, an interpolated key
    "escaped_generate": (lambda c, m: put(c["data"]["generate"], root=escaped_payload(m)), "data.generate.root"),
    "escaped_env": (lambda c, m: put(c["data"], root="\\${oc.env:PATH}"), "data.root"),
    "doubly_escaped": (lambda c, m: put(c["data"]["val"], ann_file="\\\\${oc.env:PATH}"), "data.val.ann_file"),
    "nested": (lambda c, m: put(c["data"], root="${oc.env:DETECTRES_CACHE,${oc.create:{_target_: builtins.open, "
                                            f"file: '{m}', mode: w}}}}}}/shapes_v1"), "data.root"),
    "decode": (lambda c, m: put(c["model"]["rpn"], nms_thresh="${oc.decode:'{_target_: builtins.open, file: "
                                                            f"{m}, mode: w}}'}}"), "model.rpn.nms_thresh"),
    "interpolated_key": (lambda c, m: put(c["data"], **{"${oc.env:PATH}": 1}), "data.${oc.env:PATH}"),
    # a config stored before format 3 that looks like a shipped interpolation but is not one
    "legacy_lookalike": (lambda c, m: put(c, config_format=2) or put(c["data"], root=(
        "${oc.env:DETECTRES_CACHE,${oc.env:HOME}/.cache/detectres}/shapes_v1${oc.env:PATH}")), "data.root"),
    "legacy_misplaced": (lambda c, m: put(c, config_format=2) or put(c["model"], pixel_mean="${data.root}"),
                         "model.pixel_mean"),
    # the typed joins: a suffix with an interpolation, a join onto a place that is not a data path
    "join_suffix": (lambda c, m: c["joins"].update({"data.root": {"base": "cache", "suffix": "/${oc.env:PATH}"}}),
                    "sets joins: data.root: suffix"),
    "join_place": (lambda c, m: c["joins"].update({"model.backbone._target_": {"base": "data.root", "suffix": ""}}),
                   "sets joins: 'model.backbone._target_'"),
}


@pytest.fixture(scope="module")
def good(tmp_path_factory, shapes_overrides):
    """A real quickstart checkpoint (untrained weights) for the tiny shapes set: config, classes, weights."""
    folder = tmp_path_factory.mktemp("good")
    cfg = compose_config("train", [*shapes_overrides, f"runtime.output_dir={folder}"])
    model = build_model(cfg.model, num_classes=3)
    state = {"model": model.state_dict(), "config": checkpoint_config(cfg),
             "class_names": ["circle", "rectangle", "triangle"], "iteration": 0}
    torch.save(state, folder / "model_final.pth")
    return state, folder


def crafted(good, folder, kind) -> tuple[str, str]:
    """(path of a checkpoint whose config carries the ``kind`` attack, marker path)."""
    state, _ = good
    evil = copy.deepcopy(state)
    marker = folder / MARKER
    CRAFTS[kind][0](evil["config"], marker)
    path = folder / f"evil_{kind}.pth"
    torch.save(evil, path)
    return str(path), str(marker)


def one_image(folder) -> str:
    path = str(folder / "frame.png")
    cv2.imwrite(path, np.zeros((32, 32, 3), np.uint8))
    return path


def run_entry(entry, path, folder, shapes_overrides):
    """Use the crafted ``path`` through one of the ways a user restores a model."""
    out = f"runtime.output_dir={folder / 'out'}"
    if entry == "python_api":
        return Detector.from_checkpoint(path, device="cpu")
    if entry == "pkl":  # a detectres-format .pkl (plain containers in a pickle, no torch objects)
        state = torch.load(path, weights_only=True)
        pkl = path.replace(".pth", ".pkl")
        with open(pkl, "wb") as f:
            pickle.dump({"model": {}, "config": state["config"]}, f)
        return Detector.from_checkpoint(pkl, device="cpu")
    if entry == "predict":
        overrides = [f"checkpoint={path}", out]
        return predict(compose_config("predict", overrides), overrides)
    if entry == "test_net":
        overrides = [f"checkpoint={path}", out]
        return evaluate(compose_config("eval", overrides), overrides)
    if entry == "demo":
        overrides = [f"checkpoint={path}", f"source={one_image(folder)}", f"output={folder / 'frames'}",
                     "display=false"]
        return run_demo(compose_config("demo", overrides), overrides)
    if entry == "model_weights":
        return train(compose_config("train", [*shapes_overrides, f"model.weights={path}", out, "solver.max_iter=1"]))
    if entry == "resume":
        os.makedirs(folder / "out", exist_ok=True)
        os.replace(path, folder / "out" / "model_0000001.pth")
        (folder / "out" / "last_checkpoint").write_text("model_0000001.pth")
        return train(compose_config("train", [*shapes_overrides, out, "resume=true", "solver.max_iter=3"]))
    raise ValueError(entry)


ENTRIES = ["python_api", "pkl", "predict", "test_net", "demo", "model_weights", "resume"]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("kind", sorted(CRAFTS))
def test_crafted_checkpoint_is_refused_everywhere(good, tmp_path, shapes_overrides, entry, kind):
    path, marker = crafted(good, tmp_path, kind)
    with pytest.raises(UnsafeConfigError, match=rf"refusing .*evil_{kind}\.p(th|kl)|refusing .*model_0000001\.pth") as err:
        run_entry(entry, path, tmp_path, shapes_overrides)
    assert CRAFTS[kind][1] in str(err.value)
    assert not os.path.exists(marker)


def test_the_attacks_are_real_and_a_second_layer_holds(good, tmp_path, monkeypatch):
    """The crafted configs are real attacks: Hydra's instantiate, given the stored node (the model one) or
    the reported escaped string resolved as OmegaConf would, runs their code. Without the reader's check,
    the restricted builder still imports nothing undeclared."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import detectres.weights.loading as loading
    from detectres.config.schema import ConfigError

    state, _ = good
    for kind in ("model", "escaped_generate"):
        evil = copy.deepcopy(state["config"])
        marker = tmp_path / f"{kind}.txt"
        CRAFTS[kind][0](evil, marker)
        node = evil["model"]["backbone"] if kind == "model" else {"root": evil["data"]["generate"]["root"]}
        resolved = OmegaConf.to_container(OmegaConf.create({"n": node}), resolve=True)["n"]
        if kind == "escaped_generate":  # the escape is gone after one resolution; Hydra resolves again
            resolved = OmegaConf.to_container(OmegaConf.create(resolved), resolve=True)
        try:
            instantiate(resolved)
        except Exception:
            pass
        assert os.path.exists(marker), kind
    monkeypatch.setattr(loading, "read_stored_config", lambda config, *args, **kwargs: config)
    path, marker = crafted(good, tmp_path, "model")
    with pytest.raises(ConfigError, match=r"model.backbone._target_='builtins.open': not a detectres constructor"):
        Detector.from_checkpoint(path, device="cpu")
    assert not os.path.exists(marker)


def test_the_project_own_configs_pass_and_a_good_checkpoint_restores(good):
    from detectres.config import CONFIG_DIR

    state, folder = good
    for name in ("train", "eval", "predict"):
        check_stored_config(checkpoint_config(compose_config(name, ["runtime.output_dir=x"])), name)
    det = Detector.from_checkpoint(str(folder / "model_final.pth"), device="cpu")
    assert det.class_names == ["circle", "rectangle", "triangle"]
    # the allowlist is what the project's YAML names (read here line by line, there with a YAML parser): the
    # 22 constructors the hand-kept list held plus YOLODataset (configs/data/yolo.yaml) and the cosine and
    # linear LR schedules (configs/solver/lr_scheduler/), the file-writing one only at its place, and nothing
    # outside detectres
    from detectres.config.targets import DECLARED_TARGETS, PLACED_TARGETS, target_allowed

    targets = set()
    for root, _, files in os.walk(CONFIG_DIR):
        for f in files:
            targets.update(line.split(":", 1)[1].strip() for line in open(os.path.join(root, f))
                           if line.strip().startswith("_target_:"))
    assert targets == DECLARED_TARGETS | set(PLACED_TARGETS) and len(DECLARED_TARGETS) == 25
    assert "detectres.data.datasets.yolo.YOLODataset" in DECLARED_TARGETS
    assert {"detectres.engine.solver.WarmupCosineLR", "detectres.engine.solver.WarmupLinearLR"} <= DECLARED_TARGETS
    assert not set(PLACED_TARGETS) & DECLARED_TARGETS and all(t.startswith("detectres.") for t in DECLARED_TARGETS)
    writer = next(iter(PLACED_TARGETS))
    assert target_allowed(writer, PLACED_TARGETS[writer]) and not target_allowed(writer, "model.backbone")


@pytest.mark.parametrize("tool", ["test_net", "predict", "demo", "resume"])
def test_tools_refuse_with_the_key_named(good, tmp_path, shapes_overrides, tool):
    path, marker = crafted(good, tmp_path, "model")
    script = {"test_net": "tools/test_net.py", "predict": "tools/predict.py", "demo": "demo/demo.py",
              "resume": "tools/train_net.py"}[tool]
    args = {"test_net": [f"checkpoint={path}"], "predict": [f"checkpoint={path}"],
            "demo": [f"checkpoint={path}", f"source={one_image(tmp_path)}", f"output={tmp_path / 'o'}",
                     "display=false"],
            "resume": [*shapes_overrides, f"runtime.output_dir={tmp_path / 'run'}", "resume=true"]}[tool]
    if tool == "resume":
        os.makedirs(tmp_path / "run")
        os.replace(path, tmp_path / "run" / "model_0000001.pth")
        (tmp_path / "run" / "last_checkpoint").write_text("model_0000001.pth")
    res = subprocess.run([sys.executable, str(PROJECT_ROOT / script), *args], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert res.returncode != 0
    assert "refusing" in res.stderr and "model.backbone._target_" in res.stderr, res.stderr[-2000:]
    assert not os.path.exists(marker)


def test_the_generator_never_replaces_a_folder_it_did_not_write(tmp_path):
    from detectres.data.datasets.shapes import ensure_shapes_dataset

    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a shapes dataset written by detectres"):
        ensure_shapes_dataset(str(tmp_path), num_train=2, num_val=1, size=64)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    made = ensure_shapes_dataset(str(tmp_path / "shapes"), num_train=2, num_val=1, size=64)
    again = ensure_shapes_dataset(made, num_train=3, num_val=1, size=64)  # its own dataset: replaced
    assert len(os.listdir(os.path.join(again, "train"))) == 3


def test_your_own_targets_and_interpolations_restore(tmp_path):
    """A run's own classes (from its command line) and interpolations do not lock it out of its checkpoints."""
    from detectres.config.targets import targets_in
    from detectres.engine.checkpoint import Checkpointer

    own = {"model": {"_target_": "mypkg.Net", "depth": 3}, "data": {"root": "/d"}}
    check_stored_config(own, "x", trusted=targets_in(own))
    with pytest.raises(UnsafeConfigError, match="model._target_: _target_ 'mypkg.Net'"):
        check_stored_config(own, "x")
    with pytest.raises(UnsafeConfigError, match="data.x._target_"):  # trusted at its own place only
        check_stored_config({"data": {"x": {"_target_": "mypkg.Net"}}}, "x", trusted=targets_in(own))
    Checkpointer(str(tmp_path), model=torch.nn.Linear(2, 2), extra={"config": own}).save("model_0000001", 0)
    assert Checkpointer(str(tmp_path), model=torch.nn.Linear(2, 2), extra={"config": own}).resume() == 1
    other = {"model": {"_target_": "detectres.modeling.detector.FasterRCNN"}}
    with pytest.raises(UnsafeConfigError, match="refusing .*model_0000001.pth"):
        Checkpointer(str(tmp_path), model=torch.nn.Linear(2, 2), extra={"config": other}).resume()
    # a checkpoint stores literal values: the user's own interpolations resolved, the shipped ones as joins
    cfg = compose_config("train", ["data.root=${oc.env:SOME_OTHER_VAR,/tmp/elsewhere}/d", "runtime.output_dir=x"])
    stored = checkpoint_config(cfg)
    assert stored["data"]["root"] == "/tmp/elsewhere/d" and stored["data"]["train"]["image_dir"] == "/tmp/elsewhere/d/train"
    assert stored["joins"]["data.train.image_dir"] == {"base": "data.root", "suffix": "/train"}
    assert "data.root" not in stored["joins"]
    check_stored_config(stored, "own")


def test_ensemble_members_keep_their_own_recipe(good, tmp_path):
    from omegaconf import OmegaConf

    from detectres.apps.evaluate import ensemble_member
    from detectres.weights.restore import restore_model

    _, folder = good
    path = str(folder / "model_final.pth")
    overrides = [f"checkpoint={path}", "model.rpn.post_nms_topk_test=5"]
    composed = compose_config("eval", overrides)
    restored = restore_model(composed, overrides, checkpoint=path)
    assert restored.model.rpn.topk_test == (1000, 5)  # the command line reaches the first model
    member = ensemble_member(composed, restored, path)
    assert member.rpn.topk_test == (1000, 100)  # members are restored as they were trained
    bare = tmp_path / "bare.pth"
    torch.save({"model": restored.model.state_dict()}, bare)  # no stored config: the first model's recipe
    assert ensemble_member(composed, restored, str(bare)).rpn.topk_test == (1000, 5)
    assert OmegaConf.select(restored.config, "model.rpn.post_nms_topk_test") == 5


def test_checkpoints_written_before_format_3_restore_with_their_paths_computed(tmp_path, monkeypatch):
    """A format-2 config (what detectres stored until now: the shipped YAML's interpolations kept) restores;
    its interpolations are recognised, not resolved: the values are computed from $DETECTRES_CACHE and the
    caller's overrides, exactly as the YAML meant."""
    from omegaconf import OmegaConf

    from detectres.config import read_stored_config
    from detectres.weights.restore import recipe_config

    cfg = compose_config("train", ["runtime.output_dir=x"])
    old = OmegaConf.to_container(cfg, resolve=False)
    old["runtime"], old["config_format"] = OmegaConf.to_container(cfg.runtime, resolve=True), 2
    del old["augment"]  # format-2 configs were stored before the augment node existed
    assert old["data"]["val"]["image_dir"] == "${data.root}/val"
    monkeypatch.setenv("DETECTRES_CACHE", str(tmp_path / "cache"))
    for stored in (old, checkpoint_config(cfg)):  # format 2, and today's literal form with its joins
        read = read_stored_config(stored, "ck")
        assert read["data"]["root"] == str(tmp_path / "cache" / "shapes_v1")
        assert read["data"]["val"]["image_dir"] == str(tmp_path / "cache" / "shapes_v1" / "val")
        assert read["data"]["train"]["checks"] == read["data"]["checks"]
        moved = recipe_config(compose_config("eval", ["data.root=/new"]), read, ["data.root=/new"])
        assert moved.data.val.image_dir == "/new/val" and moved.data.generate.root == "/new"
        checks = recipe_config(compose_config("eval", ["data.checks.scan=decode"]), read, ["data.checks.scan=decode"])
        assert checks.data.val.checks.scan == "decode"
    other = copy.deepcopy(old)
    other["data"]["root"] = "${detectres_data:}/coco8"
    from detectres.config import DATA_DIR

    assert read_stored_config(other, "ck")["data"]["root"] == str(DATA_DIR / "coco8")


def test_a_killed_dataset_build_is_cleaned_by_the_next(tmp_path):
    """SIGKILL during generation leaves a .shapes-XXXX folder; the next build removes it (its writer is gone)."""
    import signal
    import time

    code = ("import sys; from detectres.data.datasets.shapes import ensure_shapes_dataset; "
            "ensure_shapes_dataset(sys.argv[1], num_train=20000, num_val=1, size=64)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "shapes")])
    deadline = time.time() + 60
    while time.time() < deadline and not [p for p in tmp_path.glob(".shapes-*") if (p / "OWNER.json").exists()]:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(list(tmp_path.glob(".shapes-*"))) == 1
    from detectres.data.datasets.shapes import ensure_shapes_dataset

    ensure_shapes_dataset(str(tmp_path / "other"), num_train=2, num_val=1, size=64)
    assert not list(tmp_path.glob(".shapes-*")) and sorted(os.listdir(tmp_path)) == ["other"]
    assert "OWNER.json" not in os.listdir(tmp_path / "other")


def test_only_detectres_constructors_in_the_shipped_yaml_are_declared(tmp_path, monkeypatch):
    """A YAML file in the configs folder naming a constructor outside detectres (or a file-writing one) does
    not declare it: those stay the user's to allow (allow_targets, or their own composed config)."""
    from detectres.config import targets

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "x.yaml").write_text("_target_: detectres.modeling.rpn.RPN\nhead:\n  - _target_: os.system\n"
                                              "gen:\n  _target_: detectres.data.datasets.shapes.ensure_shapes_dataset\n")
    monkeypatch.setattr(targets, "CONFIG_DIR", tmp_path)
    assert targets.declared_targets.__wrapped__() == {"detectres.modeling.rpn.RPN"}
