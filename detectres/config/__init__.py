"""Configuration: composing the project's Hydra YAML, carrying overrides, and checking stored configs."""
from detectres.config.compose import (
    CONFIG_DIR,
    CONFIG_FORMAT,
    DATA_DIR,
    PROJECT_ROOT,
    checkpoint_config,
    compose_config,
    instantiate_target,
    task_overrides,
)
from detectres.config.overrides import carry_overrides, override_key
from detectres.config.safety import UnsafeConfigError, allow_targets, check_stored_config

__all__ = ["CONFIG_DIR", "CONFIG_FORMAT", "DATA_DIR", "PROJECT_ROOT", "UnsafeConfigError", "allow_targets", "carry_overrides",
           "check_stored_config", "checkpoint_config", "compose_config", "instantiate_target", "override_key",
           "task_overrides"]
