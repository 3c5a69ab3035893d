"""Composing the project's Hydra YAML (``configs/``) outside of ``@hydra.main``, and what a checkpoint stores.

The YAML mirrors the constructors: every node with a ``_target_`` is built by Hydra's ``instantiate``
from the keyword arguments beside it. Two keys are not constructor arguments: ``model.weights`` (a
file loaded after building, see :mod:`detectres.weights.restore`) and ``model.num_classes`` when null
(filled from the class names).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from detectres.config.safety import interpolation_problem

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJECT_ROOT = PACKAGE_DIR.parent
# An installed package (wheel, ``pip install .``) carries the configs and the sample data inside it; a
# source checkout (and an editable install) reads them from the project's ``configs/`` and ``tests/data/``.
CONFIG_DIR = next((d for d in (PACKAGE_DIR / "configs", PROJECT_ROOT / "configs") if d.is_dir()), PROJECT_ROOT / "configs")
DATA_DIR = next((d for d in (PACKAGE_DIR / "samples", PROJECT_ROOT / "tests" / "data") if d.is_dir()),
                PROJECT_ROOT / "tests" / "data")
# Bumped when the stored form of a config changes; older checkpoints are upgraded on restore.
CONFIG_FORMAT = 2


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
            cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    finally:
        restore_gh_from_backup(backup)
    # Let ${hydra:...} interpolations resolve as they do under @hydra.main (unless an app owns them).
    if not HydraConfig.initialized() or HydraConfig.instance().cfg is _composed_hydra[0]:
        HydraConfig.instance().set_config(cfg)
        _composed_hydra[0] = HydraConfig.instance().cfg
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def task_overrides() -> list[str]:
    """The command-line overrides of the running ``@hydra.main`` tool (what a restore carries over)."""
    return list(HydraConfig.get().overrides.task)


def checkpoint_config(cfg: DictConfig) -> dict[str, Any]:
    """The config a checkpoint stores: interpolations kept, so an override such as ``data.root=/new``
    still reaches ``data.val.image_dir`` when the checkpoint is evaluated; the ``runtime`` node (which
    depends on the Hydra run) resolved, and so is any interpolation a restore would refuse (another
    resolver, ``oc.env`` on another variable). A restore never takes ``runtime`` from a checkpoint."""
    out = OmegaConf.to_container(cfg, resolve=False)
    out["runtime"] = OmegaConf.to_container(cfg.runtime, resolve=True)
    out["config_format"] = CONFIG_FORMAT
    resolve_refused_interpolations(out, cfg)
    return out


def resolve_refused_interpolations(node: Any, cfg: DictConfig, path: str = "") -> None:
    """Replace, in the plain containers ``node``, each string a stored-config check would refuse by its
    value in ``cfg`` (resolved now)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in list(items):
        where = f"{path}.{key}" if path else str(key)
        if isinstance(value, str) and interpolation_problem(value):
            node[key] = OmegaConf.select(cfg, where)
        elif isinstance(value, (dict, list)):
            resolve_refused_interpolations(value, cfg, where)


def instantiate_target(node: Any, **kwargs: Any) -> Any:
    """Hydra's ``instantiate``, except that a data error raised by the target itself (a missing file,
    a bad value) comes out as raised: Hydra would wrap it with its message ``repr()``'d onto one line."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, (OSError, ValueError, KeyError)):
            raise e.__cause__ from None
        raise
