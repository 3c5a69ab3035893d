"""Which constructors a config may name, and the one place a ``_target_`` string becomes a callable.

A ``_target_`` is resolved only when it is declared (:func:`declared_targets`: a ``detectres.*``
constructor the project's own YAML names), placed where it belongs (:data:`PLACED_TARGETS`: a target
that writes files, the one list kept by hand, as a policy), added by the user in Python
(:func:`allow_targets`), or named at the same place by a config the user composed (their own YAML and
command line: :func:`trust_composed`). Nothing else is ever imported: the restricted builder
(:mod:`detectres.config.builder`) and the schema (:mod:`detectres.config.schema`) both resolve targets
here, so a stored config cannot make either import a module of its choosing. No Hydra or OmegaConf here
(the shipped YAML is read with PyYAML's safe loader).
"""
from __future__ import annotations

import functools
import importlib
from typing import Any, Callable, Mapping

import yaml

from detectres.config.paths import CONFIG_DIR
from detectres.config.portable import walk

# Targets that write files: allowed only at the place the project's configs put them.
PLACED_TARGETS: dict[str, str] = {"detectres.data.datasets.shapes.ensure_shapes_dataset": "data.generate"}


@functools.cache
def declared_targets() -> frozenset[str]:
    """The constructors the project's own YAML names (``configs/``, shipped inside the package): a
    constructor is declared for configs by a shipped config that uses it, not by a list kept beside them.
    Only detectres' own (``detectres.*``) count, and a file-writing one stays at its place
    (:data:`PLACED_TARGETS`); anything else a config names is the user's (see the module's docstring)."""
    found: set[str] = set()
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        with open(path, encoding="utf-8") as f:
            found.update(target for *_, key, target in walk(yaml.safe_load(f) or {}, "")
                         if key == "_target_" and isinstance(target, str))
    return frozenset(t for t in found if t.startswith("detectres.") and t not in PLACED_TARGETS)


def __getattr__(name: str):
    if name == "DECLARED_TARGETS":  # read on first use: importing this module reads no file
        return declared_targets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_allowed_anywhere: set[str] = set()            # allow_targets()
_composed_places: dict[str, set[str]] = {}     # place -> targets a composed (trusted) config put there


class TargetNotAllowed(ValueError):
    """A ``_target_`` that is neither declared nor the user's own; nothing was imported."""


def allow_targets(*names: str) -> None:
    """Let configs, stored ones included, name these classes too (your own backbone or dataset, say),
    as fully qualified ``module.Class`` strings."""
    _allowed_anywhere.update(names)


def trust_composed(places: Mapping[str, str]) -> None:
    """Targets of a config the user composed (their YAML, their command line), by place: a stored config
    may name the same class at the same place, and the builder may build it there."""
    for place, target in places.items():
        if target not in declared_targets():
            _composed_places.setdefault(place, set()).add(target)


def target_allowed(target: Any, place: str, trusted: Mapping[str, str] | None = None) -> bool:
    if not isinstance(target, str):
        return False
    if target in declared_targets() or target in _allowed_anywhere or PLACED_TARGETS.get(target) == place:
        return True
    return target in _composed_places.get(place, ()) or (trusted or {}).get(place) == target


def resolve_target(target: str, place: str, trusted: Mapping[str, str] | None = None) -> Callable:
    """The callable ``target`` names, imported only if it is allowed at ``place``."""
    if not target_allowed(target, place, trusted):
        raise TargetNotAllowed(f"{place + '.' if place else ''}_target_={target!r}: not a detectres constructor "
                               "allowed there (declared in detectres/config/targets.py, or yours via "
                               "allow_targets / your own config)")
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise TargetNotAllowed(f"{place + '.' if place else ''}_target_={target!r}: cannot import it ({e})") from None


def targets_in(config: Any, path: str = "") -> dict[str, str]:
    """Place -> ``_target_`` for every node of a config given as plain containers (or a DictConfig,
    read without resolving)."""
    if hasattr(config, "_metadata"):  # a DictConfig/ListConfig: read its raw structure
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(config, resolve=False)
    if not isinstance(config, (dict, list)):
        return {}
    return {place.rpartition(".")[0]: value for place, _, key, value in walk(config, path)
            if key == "_target_" and isinstance(value, str)}
