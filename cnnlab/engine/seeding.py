"""Reproducibility: seeding, and the global random state saved in every checkpoint.

A run is reproducible because every source of randomness is either seeded from the config
(model initialization, here) or derived from `(seed, epoch)` (shuffling and augmentation, in
the `BatchLoader`). What remains, the global generators that dropout draws from, is saved in
every checkpoint as plain values and tensors and restored on resume, so a resumed run continues
exactly where the interrupted one stopped.
"""

from __future__ import annotations

import random

import torch


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
    """Restore what `rng_state` returned.

    The generator states must be CPU byte tensors, wherever the checkpoint was mapped to:
    `torch.cuda.set_rng_state` refuses a state that lives on the GPU.
    """
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([generator.cpu() for generator in state["cuda"]])
    random.setstate(state["python"])
