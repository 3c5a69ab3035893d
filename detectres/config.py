"""Hydra configuration: composing the YAML in ``configs/`` and building objects from it.

The YAML mirrors the constructors (``_target_`` nodes). Two keys under ``model`` are not
constructor arguments and are handled here: ``weights`` (a file loaded after building) and
``num_classes`` when null (filled from the dataset's categories).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"
NON_CONSTRUCTOR_MODEL_KEYS = ("weights",)


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("detectres_root"):
        OmegaConf.register_new_resolver("detectres_root", lambda: str(PROJECT_ROOT))


_register_resolvers()


def compose_config(config_name: str = "train", overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with Hydra overrides, outside of ``@hydra.main``."""
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


def checkpoint_config(cfg: DictConfig) -> dict[str, Any]:
    """The config a checkpoint stores: interpolations kept, so an override such as ``data.root=/new``
    still reaches ``data.val.image_dir`` when the checkpoint is evaluated; ``output_dir`` (which
    depends on the Hydra run) resolved."""
    out = OmegaConf.to_container(cfg, resolve=False)
    out["output_dir"] = str(cfg.output_dir)
    return out


def merge_dotlist(cfg: DictConfig | dict, overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """Apply ``key=value`` overrides to ``cfg``; a key that does not exist raises, naming it."""
    base = OmegaConf.create(cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(base, True)
    return OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))


def reapply_overrides(base: DictConfig, composed: DictConfig, overrides: list[str],
                      skip: tuple[str, ...] = ()) -> DictConfig:
    """Carry command-line ``overrides`` (already validated by Hydra in ``composed``) onto ``base``.

    ``key=value`` copies ``composed.key``; a group choice such as ``data=coco8`` copies the whole
    node (and ``model=...`` also its ``input`` node, which model configs set globally).
    """
    base = OmegaConf.create(OmegaConf.to_container(base, resolve=False))
    for text in overrides:
        key = text.split("=", 1)[0].lstrip("+~")
        if key in skip or key.startswith("hydra."):
            continue
        if text.startswith("~"):  # a deletion: remove the key from the base too
            parent, _, last = key.rpartition(".")
            node = OmegaConf.select(base, parent) if parent else base
            if node is not None and last in node:
                del node[last]
            continue
        keys = [key, "input"] if key == "model" else [key]
        for k in keys:
            value = OmegaConf.select(composed, k, throw_on_missing=False)
            OmegaConf.update(base, k, value, merge=False, force_add=True)
    return base


def instantiate_target(node: Any, **kwargs: Any) -> Any:
    """Hydra's ``instantiate``, except that a data error raised by the target itself (a missing file,
    a bad value) comes out as raised: Hydra would wrap it with its message ``repr()``'d onto one line."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, (OSError, ValueError, KeyError)):
            raise e.__cause__ from None
        raise


def build_model(model_cfg: DictConfig, num_classes: int | None = None):
    """Instantiate ``model_cfg`` (a ``FasterRCNN`` node) with ``num_classes`` filled in."""
    node = OmegaConf.to_container(model_cfg, resolve=True)
    for key in NON_CONSTRUCTOR_MODEL_KEYS:
        node.pop(key, None)
    if node.get("num_classes") is None:
        if num_classes is None:
            raise ValueError("model.num_classes is null and no dataset was given to read the class count from")
        node["num_classes"] = num_classes
    elif num_classes is not None and node["num_classes"] != num_classes:
        raise ValueError(f"model.num_classes={node['num_classes']} but the dataset has {num_classes} classes")
    return instantiate(node)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def set_threads(num_threads: int | None, num_workers: int) -> int:
    """Use the cores left after data workers, shared among the processes ``torchrun`` started on this
    machine (never oversubscribe); returns the thread count."""
    import torch

    from detectres.engine.distributed import local_world_size

    if num_threads is None or num_threads <= 0:
        per_process = (os.cpu_count() or 1) // max(1, local_world_size())
        num_threads = max(1, per_process - num_workers)
    torch.set_num_threads(num_threads)
    return num_threads
