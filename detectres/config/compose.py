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
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "configs"
# Bumped when the stored form of a config changes; older checkpoints are upgraded on restore.
CONFIG_FORMAT = 2


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("detectres_root"):
        OmegaConf.register_new_resolver("detectres_root", lambda: str(PROJECT_ROOT))


_register_resolvers()


def compose_config(config_name: str = "train", overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with Hydra overrides, as the tools see it."""
    if not CONFIG_DIR.is_dir():
        raise FileNotFoundError(f"detectres config directory not found: {CONFIG_DIR}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    # Let ${hydra:...} interpolations resolve as they do under @hydra.main.
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def task_overrides() -> list[str]:
    """The command-line overrides of the running ``@hydra.main`` tool (what a restore carries over)."""
    return list(HydraConfig.get().overrides.task)


def checkpoint_config(cfg: DictConfig) -> dict[str, Any]:
    """The config a checkpoint stores: interpolations kept, so an override such as ``data.root=/new``
    still reaches ``data.val.image_dir`` when the checkpoint is evaluated; the ``runtime`` node (which
    depends on the Hydra run) resolved. A restore never takes ``runtime`` from a checkpoint."""
    out = OmegaConf.to_container(cfg, resolve=False)
    out["runtime"] = OmegaConf.to_container(cfg.runtime, resolve=True)
    out["config_format"] = CONFIG_FORMAT
    return out


def instantiate_target(node: Any, **kwargs: Any) -> Any:
    """Hydra's ``instantiate``, except that a data error raised by the target itself (a missing file,
    a bad value) comes out as raised: Hydra would wrap it with its message ``repr()``'d onto one line."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, (OSError, ValueError, KeyError)):
            raise e.__cause__ from None
        raise
