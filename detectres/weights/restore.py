"""The one way a weight file becomes a model: a detectres checkpoint (its stored config is the recipe),
or a config plus weights in any supported format, with command-line overrides on top.

Used by training (``model.weights``), evaluation, prediction, the demo and the Python API. A
checkpoint's config is data: :func:`read_weights` checks it (:mod:`detectres.config.safety`) before
anything is built, and only its recipe nodes (``model``, ``input``, ``data``) are taken from it. The
``runtime`` node (device, threads, precision, output folder) and the tool's own keys always come from
the caller's config.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf
from torch import nn

from detectres.config import CONFIG_FORMAT, carry_overrides
from detectres.config.safety import targets_in
from detectres.config.schema import Data, Input, ModelNode, validate
from detectres.data.build import dataset_class_names
from detectres.modeling.build import build_model
from detectres.utils.env import resolve_device
from detectres.weights.loading import Weights, load_weights_into, read_weights

RECIPE_NODES = ("model", "input", "data")


@dataclass
class RestoredModel:
    """A built model with its weights loaded, on the runtime device; ``config`` is the recipe it was
    built from plus the caller's runtime and tool keys."""

    model: nn.Module
    config: DictConfig
    class_names: list[str]
    source: str | None


# Recipe keys older checkpoints may lack, with the value their code assumed.
RECIPE_DEFAULTS = {
    "input": {"interpolation": "bilinear"},
    "data": {"class_names": None, "generate": None, "checks": {},
             "evaluator": {"_target_": "detectres.evaluation.coco.COCOEvaluator", "_partial_": True}},
}


def upgrade_stored_config(config: dict) -> dict:
    """A config stored by an older detectres in today's form: format 1 wrote the anchor stride and the
    RoI pooler's spatial scale (today the backbone supplies them), and the oldest lack keys whose
    defaults lived in code (:data:`RECIPE_DEFAULTS`)."""
    if config.get("config_format", 1) >= CONFIG_FORMAT:
        return config
    config = copy.deepcopy(config)
    model = config.get("model") or {}
    for parent, child, key in (("rpn", "anchor_generator", "stride"), ("roi_heads", "pooler", "spatial_scale")):
        node = (model.get(parent) or {}).get(child)
        if isinstance(node, dict):
            node.pop(key, None)
            node["_partial_"] = True
    for name, defaults in RECIPE_DEFAULTS.items():
        if isinstance(config.get(name), dict):
            for key, value in defaults.items():
                config[name].setdefault(key, copy.deepcopy(value))
    return config


def require_weights(cfg: DictConfig, action: str) -> None:
    """A tool that needs trained weights says how to give them."""
    if not cfg.checkpoint and not cfg.model.weights:
        raise ValueError(f"nothing to {action}: pass checkpoint=PATH (a detectres checkpoint) or "
                         "model=NAME model.weights=PATH")


def read_for(cfg: DictConfig, path: str) -> Weights:
    """``path`` read (and its stored config checked) with the targets of the caller's own ``cfg`` trusted."""
    return read_weights(path, trusted=targets_in(cfg))


def recipe_config(cfg: DictConfig, stored: dict, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """``cfg`` with a checkpoint's recipe nodes (``stored``, upgraded) in place of its own, then the
    command-line ``overrides`` (already applied to ``cfg`` by Hydra) carried over on top."""
    stored = upgrade_stored_config(stored)
    merged = OmegaConf.to_container(cfg, resolve=False)
    merged.update({node: stored[node] for node in RECIPE_NODES if node in stored})
    return carry_overrides(OmegaConf.create(merged), cfg, overrides)


def checked_recipe(cfg: DictConfig) -> DictConfig:
    """``cfg`` once its recipe nodes (a checkpoint's, with the command line's overrides) pass the schema;
    parts of the data a restore does not use (``data.train``/``val`` paths) may stay unset."""
    for node, schema in (("model", ModelNode), ("input", Input), ("data", Data)):
        validate(cfg[node], schema, node, missing_ok=("data.train", "data.val"))
    return cfg


def restore_config(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = (), *, checkpoint: str | None = None
                   ) -> tuple[DictConfig, Weights | None, str | None]:
    """(config, weights, their path) for ``checkpoint`` (a detectres checkpoint) or ``cfg.model.weights``
    (any supported format, with ``cfg`` itself as the recipe); no weights when neither is given."""
    if checkpoint:
        weights = read_for(cfg, checkpoint)
        if not weights.config:
            raise ValueError(f"{checkpoint} carries no config: pass model=NAME model.weights={checkpoint} "
                             "instead of checkpoint=")
        return checked_recipe(recipe_config(cfg, weights.config, overrides)), weights, checkpoint
    if cfg.model.weights:
        return checked_recipe(cfg), read_for(cfg, cfg.model.weights), cfg.model.weights
    return checked_recipe(cfg), None, None


def build_restored(cfg: DictConfig, weights: Weights | None, source: str | None, *,
                   class_names: list[str] | None = None, strict: bool = True) -> RestoredModel:
    """Build ``cfg.model`` for ``class_names`` (else the weights', else the data config's), load
    ``weights`` (strictly unless told otherwise) and move it to ``cfg.runtime.device``."""
    names = list(class_names or (weights.class_names if weights else None) or dataset_class_names(cfg.data))
    model = build_model(cfg.model, num_classes=len(names))
    if weights is not None:
        load_weights_into(model, weights, strict=strict, source=source)
    model.to(resolve_device(cfg.runtime.device))
    return RestoredModel(model, cfg, names, source)


def restore_model(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = (), *, checkpoint: str | None = None,
                  class_names: list[str] | None = None, strict: bool = True) -> RestoredModel:
    """:func:`restore_config` then :func:`build_restored`."""
    merged, weights, source = restore_config(cfg, overrides, checkpoint=checkpoint)
    return build_restored(merged, weights, source, class_names=class_names, strict=strict)
