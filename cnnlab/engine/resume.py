"""Resuming a run: the checks that a config can continue the run saved in a folder.

A resumed run must compute what the saved run would have computed, so its config may differ
from the saved one only in `RESUME_MAY_CHANGE`; anything else is refused with each changed
option named, and the run's `config.yaml` therefore always tells the truth. The random state a
resumed run needs comes from `cnnlab.engine.seeding`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.errors import CheckpointError, OptionError

RESUME_MAY_CHANGE = ("epochs", "device", "channels_last", "download", "out")
"""Config fields a resumed run may change: where it runs and how long, not what it computes.
`epochs` may only grow; the learning-rate schedule then stretches over the new length."""


def load_resume_checkpoint(run_dir: Path, config: TrainConfig) -> dict:
    """`run_dir/last.pt` loaded on the CPU, checked to be a run that `config` can continue.

    Loading on the CPU keeps the saved random state a CPU tensor, as `set_rng_state` needs;
    `load_state_dict` moves the weights and optimizer state to the model's device.
    """
    checkpoint = load_checkpoint(run_dir / "last.pt", map_location="cpu")
    changed = changed_options(checkpoint["config"], config)
    if changed:
        shown = "; ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
        allowed = ", ".join(RESUME_MAY_CHANGE[:-1])
        raise CheckpointError(
            f"cannot resume {run_dir} with changed options ({shown}); a resumed run may change "
            f"only {allowed}: drop the others, or start a new run with another --out"
        )
    if checkpoint["epoch"] >= config.epochs:
        raise OptionError(
            f"{run_dir} has already trained {checkpoint['epoch']} epochs; "
            f"pass --epochs above {checkpoint['epoch']} to train on"
        )
    return checkpoint


def changed_options(saved: dict[str, Any], config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """`{field: (saved value, new value)}` for each field outside `RESUME_MAY_CHANGE` that differs.

    A field the saved config lacks (written before the field existed) counts as its default.
    """
    defaults = TrainConfig().to_dict()
    changed = {}
    for key, value in config.to_dict().items():
        old = saved.get(key, defaults[key])
        if key not in RESUME_MAY_CHANGE and old != value:
            changed[key] = (old, value)
    return changed
