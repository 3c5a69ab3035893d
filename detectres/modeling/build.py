"""Build a detector from its config node."""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from detectres.config.builder import as_plain, build

# Keys of the ``model`` node that are not constructor arguments (see detectres.weights.restore).
NON_CONSTRUCTOR_KEYS = ("weights",)


def build_model(model_cfg: Any, num_classes: int | None = None, *, trusted: Mapping[str, str] | None = None) -> nn.Module:
    """Build ``model_cfg`` (a ``FasterRCNN`` node: a composed DictConfig or checked plain containers) with
    the restricted builder, ``num_classes`` filled in when it is null."""
    node = dict(as_plain(model_cfg))
    for key in NON_CONSTRUCTOR_KEYS:
        node.pop(key, None)
    if node.get("num_classes") is None:
        if num_classes is None:
            raise ValueError("model.num_classes is null and no class names were given to count")
        node["num_classes"] = num_classes
    elif num_classes is not None and node["num_classes"] != num_classes:
        raise ValueError(f"model.num_classes={node['num_classes']} but there are {num_classes} class names")
    return build(node, "model", trusted=trusted)
