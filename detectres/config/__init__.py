"""Configuration: composing the project's Hydra YAML, carrying overrides, reading stored configs as data,
and the restricted builder that turns config nodes into objects.

The names below are imported on first use, so that importing one light submodule (the constraint
vocabulary in :mod:`detectres.config.constraints`, which modeling uses) does not load Hydra.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "build": "builder",
    "CONFIG_DIR": "compose", "CONFIG_FORMAT": "compose", "DATA_DIR": "compose", "PROJECT_ROOT": "compose",
    "checkpoint_config": "compose", "compose_config": "compose", "task_overrides": "compose",
    "carry_overrides": "overrides", "override_key": "overrides",
    "UnsafeConfigError": "safety", "check_stored_config": "safety", "read_stored_config": "safety",
    "allow_targets": "targets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
