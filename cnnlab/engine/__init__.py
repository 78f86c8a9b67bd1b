"""The training and evaluation engine: fit loop, checkpoints, metrics, evaluation, plots."""
