"""The restricted builder: how every config node with a ``_target_`` becomes an object.

It replaces Hydra's ``instantiate`` for everything detectres builds (model, datasets, evaluators, the
test-time wrapper, the solver). It takes plain containers, checks them against the schema
(:func:`detectres.config.validation.validate`: every key a parameter of its constructor, every value of the
hinted type and range), then builds exactly those containers: the object that was checked is the object
that runs. Only ``_target_`` and ``_partial_`` are understood; a target is imported only when
:mod:`detectres.config.targets` allows it at that place; strings are never interpreted.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from detectres.config.schema import Node
from detectres.config.validation import validate
from detectres.config.targets import resolve_target


def as_plain(node: Any) -> Any:
    """A composed (trusted) DictConfig resolved into plain containers; plain containers as they are."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def construct(value: Any, path: str, trusted: Mapping[str, str] | None, kwargs: Mapping[str, Any] = ()) -> Any:
    """Build ``value`` (already validated): a ``_target_`` node becomes its object (a ``functools.partial``
    when ``_partial_``), lists and mappings are built element by element, anything else is a literal."""
    if isinstance(value, dict):
        if "_target_" not in value:
            return {k: construct(v, f"{path}.{k}", trusted) for k, v in value.items()}
        target = resolve_target(value["_target_"], path, trusted)
        args = {k: construct(v, f"{path}.{k}" if path else str(k), trusted)
                for k, v in value.items() if k not in ("_target_", "_partial_")}
        args.update(kwargs)
        return functools.partial(target, **args) if value.get("_partial_") else target(**args)
    if isinstance(value, list):
        return [construct(v, f"{path}.{i}", trusted) for i, v in enumerate(value)]
    return value


def build(node: Any, path: str, *, schema: type[Node] = Node, trusted: Mapping[str, str] | None = None,
          **kwargs: Any) -> Any:
    """Check and build the ``_target_`` node ``node`` found at ``path`` (``model``, ``data.val`` ...);
    ``kwargs`` are passed to its constructor too (objects the config cannot hold: a dataset, transforms).
    ``trusted``: place -> ``_target_`` the caller vouches for besides the declared constructors."""
    node = as_plain(node)
    validate(node, schema, path, trusted=trusted)
    return construct(node, path, trusted, kwargs)
