"""Training loop, hooks, checkpoints and precision settings."""
