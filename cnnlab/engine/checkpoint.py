"""Checkpoints: atomic saves, safe loads, and rebuilding a model from one.

A checkpoint is a dict of plain Python values and tensors only, so `torch.load(...,
weights_only=True)` can read it without unpickling arbitrary objects. Its keys:
`format_version`, `model_name`, `model_options` (the resolved options), `model_state`,
`optimizer_state`, `scheduler_state`, `scaler_state`, `epoch` (epochs completed), `rng_state`,
`mean`, `std`, `classes`, `image_shape` ([C, H, W]), `config`, `split` (how the test split
was made: a `SplitRecord` as a dict, or None), `history` and `best_metric`;
a transferred run's also `transfer` (its spec) and, when its new classifier has a hidden layer,
`classifier_hidden` (that layer's width).

Saves go through `cnnlab.fileio.atomic_write`, so a crash or a failed save never leaves a
half-written file where a good one was.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CheckpointError, CnnlabError
from cnnlab.fileio import atomic_write
from cnnlab.models import create_model

FORMAT_VERSION = 1
# What evaluation, prediction and resuming need beyond the training state.
REQUIRED_KEYS = (
    "format_version",
    "model_name",
    "model_options",
    "model_state",
    "classes",
    "mean",
    "std",
    "image_shape",
)
RUN_DIRECTORY_FILES = ("best.pt", "last.pt")


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write `state` to `path` atomically; `format_version` is added when absent."""
    with atomic_write(path) as file:
        torch.save({"format_version": FORMAT_VERSION, **state}, file)


def resolve_checkpoint_path(path: str | Path) -> Path:
    """The checkpoint file `path` names: a file, or a run directory's `best.pt` (else `last.pt`)."""
    path = Path(path)
    if path.is_dir():
        for name in RUN_DIRECTORY_FILES:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"{path} is a folder without best.pt or last.pt; pass a checkpoint file or a run folder"
        )
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint; pass a .pt file or a run folder")
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a cnnlab checkpoint with `weights_only=True` (no arbitrary code runs).

    `path` may also be a run directory. Missing, corrupt or foreign files raise
    `CheckpointError` with one line saying what is wrong.
    """
    file = resolve_checkpoint_path(path)
    if not zipfile.is_zipfile(file):  # torch.save has written zip archives since PyTorch 1.6
        raise CheckpointError(
            f"{file}: not a PyTorch checkpoint (corrupt, truncated or another kind of file)"
        )
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError) as error:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if unsafe:
            raise CheckpointError(
                f"{file}: refused to load a Python object ({unsafe.group(1)}); cnnlab checkpoints "
                "hold only tensors and plain values (torch.load(weights_only=True))"
            ) from None
        reason = str(error).strip().splitlines()[0].split(". ")[0] if str(error) else "no data"
        raise CheckpointError(f"{file}: corrupt checkpoint ({reason})") from None
    _check_format(file, state)
    return state


def _check_format(file: Path, state: object) -> None:
    if not isinstance(state, dict) or "model_state" not in state or "model_name" not in state:
        raise CheckpointError(
            f"{file}: not a cnnlab checkpoint (a bare state_dict or another tool's file); "
            "cnnlab writes its checkpoints with `cnnlab train`"
        )
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{file}: incomplete cnnlab checkpoint, missing {', '.join(missing)}")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{file}: checkpoint format {state['format_version']} is newer than this cnnlab reads "
            f"({FORMAT_VERSION}); upgrade cnnlab"
        )


def model_from_checkpoint(
    checkpoint: str | Path | dict, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict]:
    """Rebuild the checkpoint's model with its weights, on `device`, in eval mode.

    Returns the model and the checkpoint dict (loaded from disk when a path is given).
    """
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    name = state["model_name"]
    try:
        model = create_model(name, **state["model_options"])
    except CnnlabError as error:
        raise CheckpointError(f"cannot rebuild the checkpoint's model '{name}': {error}") from None
    if state.get("classifier_hidden"):  # a transferred run's head with a hidden layer
        model.reset_classifier(model.num_classes, hidden=state["classifier_hidden"])
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as error:
        first_problem = str(error).split("\n\t")[1:2] or [str(error)]  # after the headline
        details = first_problem[0].strip().rstrip(".")
        raise CheckpointError(
            f"the checkpoint's weights do not fit model '{name}': {details}"
        ) from None
    return model.to(device).eval(), state
