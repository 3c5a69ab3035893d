"""Build a detector from its config node."""
from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

# Keys of the ``model`` node that are not constructor arguments (see detectres.weights.restore).
NON_CONSTRUCTOR_KEYS = ("weights",)


def build_model(model_cfg: DictConfig, num_classes: int | None = None) -> nn.Module:
    """Instantiate ``model_cfg`` (a ``FasterRCNN`` node) with ``num_classes`` filled in when it is null."""
    node = OmegaConf.to_container(model_cfg, resolve=True)
    for key in NON_CONSTRUCTOR_KEYS:
        node.pop(key, None)
    if node["num_classes"] is None:
        if num_classes is None:
            raise ValueError("model.num_classes is null and no class names were given to count")
        node["num_classes"] = num_classes
    elif num_classes is not None and node["num_classes"] != num_classes:
        raise ValueError(f"model.num_classes={node['num_classes']} but there are {num_classes} class names")
    return instantiate(node)
