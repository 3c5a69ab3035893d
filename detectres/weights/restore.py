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
import os
from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from detectres.config import CONFIG_DIR, carry_overrides, override_key
from detectres.config.portable import apply_joins
from detectres.config.schema import Data, Input, ModelNode
from detectres.config.validation import validate
from detectres.config.targets import targets_in
from detectres.data.build import dataset_class_names
from detectres.modeling.build import build_model
from detectres.modeling.deployed import DeployedDetector, is_export_dir, read_export_info
from detectres.utils.env import resolve_device
from detectres.config.safety import check_class_names, read_stored_config
from detectres.weights.loading import Weights, load_weights_into, read_raw, read_weights

RECIPE_NODES = ("model", "input", "data")
# How a run executes, not what the model is: always the caller's, never a checkpoint's.
EXECUTION_KEYS = ("data.num_workers", "model.channels_last")


@dataclass
class RestoredModel:
    """A built model with its weights loaded, on the runtime device; ``config`` is the recipe it was
    built from plus the caller's runtime and tool keys."""

    model: nn.Module
    config: DictConfig
    class_names: list[str]
    source: str | None


class DictConfigAccess:
    """Dotted get/set on a DictConfig, for :func:`detectres.config.portable.apply_joins`."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def get(self, place: str):
        value = OmegaConf.select(self.cfg, place)
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value

    def set(self, place: str, value) -> None:
        OmegaConf.update(self.cfg, place, value, merge=False)


def require_weights(cfg: DictConfig, action: str) -> None:
    """A tool that needs trained weights says how to give them."""
    if not cfg.checkpoint and not cfg.model.weights:
        raise ValueError(f"nothing to {action}: pass checkpoint=PATH (a detectres checkpoint) or "
                         "model=NAME model.weights=PATH")


def read_for(cfg: DictConfig, path: str) -> Weights:
    """``path`` read (its stored config read as checked, literal data) with the targets of the caller's own
    ``cfg`` trusted at their places; an export folder gives its recipe and class names (no weights: an
    engine runs its files)."""
    if is_export_dir(path):
        return read_export(path, targets_in(cfg))
    return read_weights(path, trusted=targets_in(cfg))


def read_export(folder: str, trusted) -> Weights:
    """An export folder (``tools/export.py``) as a recipe: export.json's stored config, checked as a
    checkpoint's is, and its class names."""
    info = read_export_info(folder)
    where = os.path.join(folder, "export.json")
    config = read_stored_config(info["config"], where, trusted) if info.get("config") is not None else None
    return Weights({}, "export", {"export_dir": folder}, check_class_names(info["class_names"], where), config)


def refuse_model_overrides(folder: str, overrides: list[str] | tuple[str, ...]) -> None:
    """An export's graph is fixed: a ``model.*`` or ``input.*`` override cannot reach it."""
    fixed = [o for o in overrides if override_key(o).split(".")[0] in ("model", "input")]
    if fixed:
        raise ValueError(f"checkpoint={folder} is an exported model, whose graph and resize are fixed: "
                         f"{', '.join(fixed)} cannot change it (export the checkpoint again with that setting)")


def choice_overrides(path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """``group=name`` for each recipe group (``data``, ``model``, ``input``) the checkpoint at ``path`` was
    composed from and ``overrides`` do not choose: composing the tool's config with them first makes the
    checkpoint's own keys overridable (``data.evaluator.metric=area`` on a VOC checkpoint). Nothing for a
    file that is not a readable detectres checkpoint (its restore reports that)."""
    if not path or not os.path.isfile(path):
        return []
    try:  # only the stored config: no weights converted or checked (the restore does that)
        obj = read_raw(path)
        stored = obj.get("config") if isinstance(obj, dict) else None
        config = read_stored_config(stored, path) if stored is not None else {}
    except (ValueError, OSError):
        return []
    given = {override_key(o) for o in overrides}
    return [f"{group}={name}" for group, name in (config.get("choices") or {}).items()
            if group not in given and (CONFIG_DIR / group / f"{name}.yaml").is_file()]


def recipe_config(cfg: DictConfig, stored: dict, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """``cfg`` with a checkpoint's recipe nodes (``stored``: what :func:`read_stored_config` returned) in
    place of its own, except :data:`EXECUTION_KEYS`; then the command-line ``overrides`` (already applied
    to ``cfg`` by Hydra) carried over on top, and the stored ``joins`` computed for every place the command
    line did not set (``data.root=/new`` moves the data paths joined to it)."""
    same_files = {f"{group}={name}" for group, name in (stored.get("choices") or {}).items()}
    overrides = [o for o in overrides if o not in same_files]  # the checkpoint's own groups: nothing to carry
    merged = OmegaConf.to_container(cfg, resolve=False)
    merged.update({node: copy.deepcopy(stored[node]) for node in RECIPE_NODES if node in stored})
    out = OmegaConf.create(merged)
    for key in EXECUTION_KEYS:
        if OmegaConf.select(out, key.rpartition(".")[0]) is not None:
            OmegaConf.update(out, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    out = carry_overrides(out, cfg, overrides)
    try:
        apply_joins(stored.get("joins") or {}, DictConfigAccess(out), skip=[override_key(o) for o in overrides])
    except ValueError as e:
        raise ValueError(f"cannot place the checkpoint's data paths: {e}") from None
    return out


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
        if weights.format == "export":
            refuse_model_overrides(checkpoint, overrides)
        return checked_recipe(recipe_config(cfg, weights.config, overrides)), weights, checkpoint
    if cfg.model.weights:
        return checked_recipe(cfg), read_for(cfg, cfg.model.weights), cfg.model.weights
    return checked_recipe(cfg), None, None


def build_restored(cfg: DictConfig, weights: Weights | None, source: str | None, *,
                   class_names: list[str] | None = None, strict: bool = True) -> RestoredModel:
    """Build ``cfg.model`` for ``class_names`` (else the weights', else the data config's), load
    ``weights`` (strictly unless told otherwise) and move it to ``cfg.runtime.device``."""
    names = list(class_names or (weights.class_names if weights else None) or dataset_class_names(cfg.data))
    if weights is not None and weights.format == "export":
        if list(names) != list(weights.class_names):
            raise ValueError(f"{source} was exported for classes {weights.class_names}, not {names}")
        return RestoredModel(DeployedDetector(weights.meta["export_dir"], threads=cfg.runtime.num_threads), cfg,
                             names, source)
    model = build_model(cfg.model, num_classes=len(names))
    if weights is not None:  # named classes other than the file's are a class change, as another count is
        load_weights_into(model, weights, strict=strict, source=source, class_names=names)
    model.to(resolve_device(cfg.runtime.device))
    return RestoredModel(model, cfg, names, source)


def restore_model(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = (), *, checkpoint: str | None = None,
                  class_names: list[str] | None = None, strict: bool = True) -> RestoredModel:
    """:func:`restore_config` then :func:`build_restored`."""
    merged, weights, source = restore_config(cfg, overrides, checkpoint=checkpoint)
    return build_restored(merged, weights, source, class_names=class_names, strict=strict)
