"""Resuming a run: the checks that a config can continue the run saved in a folder.

The random state a resumed run needs comes from `cnnlab.engine.seeding`.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.errors import CheckpointError, OptionError

# Config fields a resumed run must share with the run it continues.
RESUME_MUST_MATCH = ("model", "model_options", "data", "image_size", "channels", "val_fraction")


def load_resume_checkpoint(run_dir: Path, config: TrainConfig) -> dict:
    """`run_dir/last.pt` loaded on the CPU, checked to be a run that `config` can continue.

    Loading on the CPU keeps the saved random state a CPU tensor, as `set_rng_state` needs;
    `load_state_dict` moves the weights and optimizer state to the model's device.

    The model, its options and the data must be the same; `epochs` may grow (to train on).
    """
    checkpoint = load_checkpoint(run_dir / "last.pt", map_location="cpu")
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
