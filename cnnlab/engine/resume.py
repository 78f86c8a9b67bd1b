"""Reproducibility and resuming: seeding, the global random state, and the resume checks.

A run is reproducible because every source of randomness is either seeded from the config
(model initialization, here) or derived from `(seed, epoch)` (shuffling and augmentation, in
the `BatchLoader`). What remains, the global generators that dropout draws from, is saved in
every checkpoint as plain values and tensors and restored on resume, so a resumed run continues
exactly where the interrupted one stopped.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.errors import CheckpointError, OptionError

# Config fields a resumed run must share with the run it continues.
RESUME_MUST_MATCH = ("model", "model_options", "data", "image_size", "channels", "val_fraction")


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's generators (every CUDA device included)."""
    random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global random state as plain values and tensors (safe for `weights_only` loads)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])


def load_resume_checkpoint(
    run_dir: Path, config: TrainConfig, device: torch.device | str = "cpu"
) -> dict:
    """`run_dir/last.pt`, checked to be a run that `config` can continue.

    The model, its options and the data must be the same; `epochs` may grow (to train on).
    """
    checkpoint = load_checkpoint(run_dir / "last.pt", map_location=device)
    previous = checkpoint["config"]
    for key in RESUME_MUST_MATCH:
        if previous.get(key) != getattr(config, key):
            raise CheckpointError(
                f"cannot resume {run_dir}: it was trained with {key}="
                f"{previous.get(key)!r}, this config has {key}={getattr(config, key)!r}"
            )
    if checkpoint["epoch"] >= config.epochs:
        raise OptionError(
            f"{run_dir} has already trained {checkpoint['epoch']} epochs; "
            f"pass --epochs above {checkpoint['epoch']} to train on"
        )
    return checkpoint
