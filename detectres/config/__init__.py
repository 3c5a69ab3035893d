"""Configuration: composing the project's Hydra YAML, carrying overrides, reading stored configs as data,
and the restricted builder that turns config nodes into objects."""
from detectres.config.builder import build
from detectres.config.compose import (
    CONFIG_DIR,
    CONFIG_FORMAT,
    DATA_DIR,
    PROJECT_ROOT,
    checkpoint_config,
    compose_config,
    task_overrides,
)
from detectres.config.overrides import carry_overrides, override_key
from detectres.config.safety import UnsafeConfigError, check_stored_config, read_stored_config
from detectres.config.targets import allow_targets

__all__ = ["CONFIG_DIR", "CONFIG_FORMAT", "DATA_DIR", "PROJECT_ROOT", "UnsafeConfigError", "allow_targets", "build",
           "carry_overrides", "check_stored_config", "checkpoint_config", "compose_config", "override_key",
           "read_stored_config", "task_overrides"]
