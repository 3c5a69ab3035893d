"""Carry command-line overrides onto a config that did not come from the command line (a checkpoint's).

The one override mechanism: Hydra composes the project's config with the overrides (checking every
key and group choice), and :func:`carry_overrides` copies the overridden nodes from that composed
config onto the other one.
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


def override_key(text: str) -> str:
    """``model.rpn.x=3`` -> ``model.rpn.x``; ``+a=1`` -> ``a``; ``~a.b`` -> ``a.b``; ``data=coco8`` -> ``data``."""
    return text.split("=", 1)[0].lstrip("+~")


def carry_overrides(base: DictConfig, composed: DictConfig, overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """``base`` with each of ``overrides`` taken from ``composed`` (where Hydra already applied and checked
    them): ``key=value`` copies ``composed.key``, a group choice such as ``data=coco8`` the whole node,
    and ``~key`` deletes the key."""
    out = OmegaConf.create(OmegaConf.to_container(base, resolve=False))
    for text in overrides:
        key = override_key(text)
        if key.startswith("hydra."):
            continue
        if text.startswith("~"):
            parent, _, last = key.rpartition(".")
            node = OmegaConf.select(out, parent) if parent else out
            if node is not None and last in node:
                del node[last]
            continue
        value = OmegaConf.select(composed, key, throw_on_missing=False)
        OmegaConf.update(out, key, value, merge=False, force_add=True)
    return out


def run_length_overrides(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """``solver.epochs=N`` alone is the whole request for a run of N epochs: the shipped ``solver.max_iter`` is
    cleared for it (``solver.max_iter=null`` added). Given both, the schema says to set one."""
    keys = {override_key(o): o.split("=", 1)[1] if "=" in o else "" for o in overrides}
    epochs = keys.get("solver.epochs", "null").strip().lower()
    if epochs not in ("null", "none", "") and "solver.max_iter" not in keys:
        return [*overrides, "solver.max_iter=null"]
    return list(overrides)
