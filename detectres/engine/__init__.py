"""The training loop, its hooks, checkpoints and the solver."""
