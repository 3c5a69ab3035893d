"""Applications: what the command-line tools run (train, evaluate, predict, demo, benchmark, check-data,
ablation). The top layer: it may use every other part of the package, and nothing imports it."""
