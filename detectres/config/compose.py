"""Composing the project's Hydra YAML (``configs/``) outside of ``@hydra.main``, and what a checkpoint stores.

The YAML mirrors the constructors: every node with a ``_target_`` is built by the restricted builder
(:mod:`detectres.config.builder`) from the keyword arguments beside it. Two keys are not constructor
arguments: ``model.weights`` (a file loaded after building, see :mod:`detectres.weights.restore`) and
``model.num_classes`` when null (filled from the class names).
"""
from __future__ import annotations

from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from omegaconf import DictConfig, OmegaConf, open_dict

from detectres.config.paths import CONFIG_DIR, DATA_DIR, PACKAGE_DIR, PROJECT_ROOT  # noqa: F401 (re-exported)
from detectres.config.overrides import run_length_overrides
from detectres.config.portable import shipped_joins, walk
from detectres.config.safety import CONFIG_FORMAT
from detectres.config.schema import ConfigError
from detectres.config.targets import targets_in, trust_composed

RECIPE_GROUPS = ("model", "input", "data")


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("detectres_root"):
        OmegaConf.register_new_resolver("detectres_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("detectres_data"):  # the bundled sample data (coco8, a street photo)
        OmegaConf.register_new_resolver("detectres_data", lambda: str(DATA_DIR))


_register_resolvers()


_composed_hydra: list = [None]  # the Hydra config compose_config last installed


def compose_config(config_name: str = "train", overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with Hydra overrides, as the tools see it.

    Inside someone else's ``@hydra.main`` app (a user calling the Python API), that app's Hydra state
    is left as it was."""
    if not CONFIG_DIR.is_dir():
        raise FileNotFoundError(f"detectres config directory not found: {CONFIG_DIR}")
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=run_length_overrides(overrides), return_hydra_config=True)
    finally:
        restore_gh_from_backup(backup)
    # Let ${hydra:...} interpolations resolve as they do under @hydra.main (unless an app owns them).
    if not HydraConfig.initialized() or HydraConfig.instance().cfg is _composed_hydra[0]:
        HydraConfig.instance().set_config(cfg)
        _composed_hydra[0] = HydraConfig.instance().cfg
    with open_dict(cfg):
        del cfg["hydra"]
    trust_composed(targets_in(cfg))  # the user's own classes, from their YAML or command line
    return cfg


def task_overrides() -> list[str]:
    """The command-line overrides of the running ``@hydra.main`` tool (what a restore carries over)."""
    return list(HydraConfig.get().overrides.task)


def checkpoint_config(cfg: DictConfig) -> dict[str, Any]:
    """The config a checkpoint stores: every value resolved now (a stored config is literal data), plus
    ``joins`` for the values the shipped YAML derives from a folder or from ``data.root`` (so a checkpoint
    moved to another machine, or evaluated with ``data.root=/new``, finds its data; see
    :mod:`detectres.config.portable`). A value that would read as an interpolation is refused here."""
    out = OmegaConf.to_container(cfg, resolve=True)
    for where, _, key, value in walk(out):
        for text in (key, value):
            if isinstance(text, str) and "${" in text:
                raise ConfigError(f"{where}={value!r:.80}: a value containing '${{' cannot be stored in a checkpoint "
                                  "(stored configs are literal)")
    raw = OmegaConf.to_container(cfg, resolve=False)
    out["joins"] = shipped_joins(raw["data"] if "data" in raw else None)
    out["choices"] = recipe_choices()
    out["config_format"] = CONFIG_FORMAT
    return out


def recipe_choices() -> dict[str, str]:
    """The config files the recipe groups were composed from (``data: voc07``...), so a tool restoring the
    checkpoint composes the same ones and a key such as ``data.evaluator.metric`` can be overridden."""
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {group: str(choices[group]) for group in RECIPE_GROUPS if choices.get(group)}
