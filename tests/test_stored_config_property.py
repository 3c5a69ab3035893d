"""Property: whatever strings a checkpoint's stored config holds, restoring it calls nothing but the declared
detectres constructors and reads no environment variable.

Hypothesis writes strings made of ``$ { } \\ : ' "``, resolver names and payload fragments into random
places of a real stored config (values and keys, today's format and the legacy one), saves the checkpoint,
and restores it the way ``test_net`` does: read the weights, merge the recipe, build the validation set,
the evaluator and the model. The import machinery (``importlib.import_module``, Hydra's ``_locate``) and
``os.environ`` are recorded for the whole restore."""
import copy
import importlib
import os
import sys

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st

from detectres.config import compose_config, checkpoint_config
from detectres.config.targets import DECLARED_TARGETS, PLACED_TARGETS

SPECIAL = "${}\\:'\""
NOISE = st.text(alphabet=SPECIAL + "ab", max_size=3)
ESCAPES = ["", "\\", "\\\\"]  # none, escaped, doubly escaped
RESOLVERS = ["oc.env:", "oc.create:", "oc.decode:", "oc.select:", "oc.dict.keys:", "detectres_data:", "detectres_root:",
             "hydra:", ""]
ARGS = ["PATH", "HOME", "DETECTRES_CACHE", "data.root", "{_target_: os.getcwd}", "'{_target_: os.getcwd}'", "x,y", ""]
SEPARATORS = ["/train", ",", ":", "'", '"', " "]


def interpolation(escape: str, resolver: str, argument: str) -> str:
    return f"{escape}${{{resolver}{argument}}}"


# interpolations: escaped or not, nested one level, whole or inside other text with stray special characters
SIMPLE = st.builds(interpolation, st.sampled_from(ESCAPES), st.sampled_from(RESOLVERS), st.sampled_from(ARGS) | NOISE)
INTERPOLATION = SIMPLE | st.builds(interpolation, st.sampled_from(ESCAPES), st.sampled_from(RESOLVERS), SIMPLE)
TEXT = INTERPOLATION | st.lists(INTERPOLATION | NOISE | st.sampled_from(SEPARATORS), min_size=1, max_size=4).map("".join)
ALLOWED = DECLARED_TARGETS | set(PLACED_TARGETS)
# the modules of the declared constructors, and the packages above them (an import walks down from the top)
ALLOWED_MODULES = {".".join(t.split(".")[:i]) for t in ALLOWED for i in range(1, t.count(".") + 1)}


def leaves(node, path=()):
    """Paths of every entry of a plain-container tree."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield path + (key,)
        yield from leaves(value, path + (key,))


def parent_of(config, path):
    node = config
    for key in path[:-1]:
        node = node[key]
    return node


TORCH_INTERNALS = (f"{os.sep}torch{os.sep}", f"{os.sep}tempfile.py")


def asked_by_torch() -> bool:
    """Is torch itself (its serialization switches, its lazily made cache folders) the reader?"""
    frame = sys._getframe(2)
    for _ in range(12):
        if frame is None:
            return False
        if any(part in frame.f_code.co_filename for part in TORCH_INTERNALS):
            return True
        frame = frame.f_back
    return False


class Recorded(dict):
    """``os.environ`` stand-in that remembers every variable asked for, except by torch's own internals."""

    def __init__(self, data, reads):
        super().__init__(data)
        self.reads = reads

    def note(self, key):
        if key != "OC_CAUSE" and not asked_by_torch():  # OmegaConf's own switch, read as it formats an error
            self.reads.append(key)

    def __getitem__(self, key):
        self.note(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.note(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.note(key)
        return super().__contains__(key)


def restore_everything(composed, path):
    """What ``test_net checkpoint=path`` builds, in order."""
    from detectres.data.build import build_dataset
    from detectres.evaluation.evaluator import build_evaluator
    from detectres.weights.restore import build_restored, restore_config

    cfg, weights, source = restore_config(composed, (), checkpoint=path)
    dataset = build_dataset(cfg, "val")
    build_evaluator(cfg.data, dataset)
    build_restored(cfg, weights, source)


def recorded_restore(composed, config, folder, patcher) -> tuple[list[str], list[str]]:
    """(modules and targets imported by name, environment variables read) while ``config`` is saved as a
    checkpoint's and restored; a refusal or a missing data path (one-line user errors) is fine."""
    import hydra._internal.instantiate._instantiate2 as hydra_instantiate
    import hydra._internal.utils as hydra_utils

    path = str(folder / "ck.pth")
    torch.save({"model": {}, "config": config}, path)
    imported, env_reads = [], []
    real_import, real_locate = importlib.import_module, hydra_utils._locate

    def recording_import(name, package=None):
        imported.append(name)
        return real_import(name, package)

    def recording_locate(name):
        imported.append(name)
        return real_locate(name)

    with patcher.context() as patch:
        patch.chdir(folder)
        patch.setattr(importlib, "import_module", recording_import)
        patch.setattr(hydra_utils, "_locate", recording_locate)
        patch.setattr(hydra_instantiate, "_locate", recording_locate)
        patch.setattr(os, "environ", Recorded(os.environ, env_reads))
        try:
            restore_everything(composed, path)
            outcome = "built"
        except (ValueError, OSError) as e:  # refused, or a data path that does not exist: one-line errors
            outcome = type(e).__name__
    if currently_in_test_context():
        event(outcome)
    return imported, env_reads


@pytest.fixture(scope="module")
def base(tiny_shapes, tmp_path_factory):
    """A real stored config (the tiny shapes), the caller's composed eval config, a folder; restoring the
    unmodified config imports only declared constructors and reads no environment variable."""
    overrides = [f"data.root={tiny_shapes}", "data.generate.num_train=24", "data.generate.num_val=8",
                 "data.generate.size=128", "data.generate.seed=1", "data.num_workers=0"]
    stored = checkpoint_config(compose_config("train", [*overrides, "runtime.output_dir=x"]))
    composed = compose_config("eval", ["runtime.device=cpu", "runtime.output_dir=x"])
    folder = tmp_path_factory.mktemp("property")
    torch.save({"model": {}, "config": stored}, folder / "warm.pth")
    try:  # the first restore in a process makes torch import its lazy parts (sympy, triton ...): not ours
        restore_everything(composed, str(folder / "warm.pth"))
    except ValueError:
        pass
    with pytest.MonkeyPatch.context() as patcher:
        imported, env_reads = recorded_restore(composed, stored, folder, patcher)
    assert env_reads == [] and all(name in ALLOWED or name in ALLOWED_MODULES for name in imported), (env_reads,
                                                                                                      imported)
    return stored, composed, folder


@settings(max_examples=500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_stored_strings_never_import_or_read_the_environment(base, monkeypatch, data):
    stored, composed, folder = base
    config = copy.deepcopy(stored)
    if data.draw(st.booleans(), label="legacy format"):
        config["config_format"] = 2
    places = sorted(leaves(config), key=repr)
    strings = [p for p in places if isinstance(parent_of(config, p)[p[-1]], str)]  # paths, names, targets
    place = st.one_of(st.sampled_from(strings), st.sampled_from(places))
    for path in data.draw(st.lists(place, min_size=1, max_size=3), label="places"):
        try:
            node = parent_of(config, path)
            if data.draw(st.booleans(), label="as key") and isinstance(node, dict) and path[-1] in node:
                node[data.draw(TEXT, label="key")] = node.pop(path[-1])
            else:
                node[path[-1]] = data.draw(TEXT, label="value")
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement removed this place
    imported, env_reads = recorded_restore(composed, config, folder, monkeypatch)
    assert all(name in ALLOWED or name in ALLOWED_MODULES for name in imported), imported
    assert env_reads == [], env_reads
