"""Extension points of the training loop: `TrainHook`, in the manner of Lightning's callbacks.

Studies, transfer learning (freezing, per-group learning rates), time budgets and the like plug
into `train(config, hooks=[...])` through these methods instead of editing the loop. Each one
receives the `Trainer` (its `model`, `optimizer`, `config`, `data`, `history`, `device`). Every
method is a no-op here; a hook overrides the ones it needs. Hooks run in the order given.

Run-folder plugins let a package that keeps its own file in a run folder (transfer's
`transfer.yaml`) have its runs resume with its hook: `RUN_FOLDER_PLUGINS` maps the file name
to the "module:function" making that hook, and `train(resume=RUN)` imports the module only when
RUN holds the file, then puts `function(RUN)` first among the hooks unless a hook of the same
type is given. So a transferred run resumes with its freezing whatever the caller imported,
and no engine module imports `transfer` (which imports the engine) at module level.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

if TYPE_CHECKING:
    from cnnlab.engine.trainer import Trainer


class TrainHook:
    """Base class of the trainer's hooks; override what you need."""

    def on_model_built(self, trainer: Trainer) -> None:
        """The model is built, initialized and on its device; the optimizer is not yet made.

        Freeze parameters (`requires_grad_(False)`) or swap layers here.
        """

    def param_groups(self, trainer: Trainer) -> list[dict] | None:
        """Optimizer parameter groups (`params`, optional `lr`, `weight_decay`), or None.

        The first hook that returns groups decides them; None keeps the default grouping
        (every trainable parameter, weight decay on weights only).
        """
        return None

    def on_train_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """The model was just put in training mode for epoch `epoch` (0-based).

        Put frozen batch-norm layers back into eval mode here.
        """

    def before_step(self, trainer: Trainer, images: Tensor, labels: Tensor) -> None:
        """A training batch is about to go through the model."""

    def after_step(self, trainer: Trainer, loss: Tensor, logits: Tensor) -> None:
        """A step is done; `loss` and `logits` are detached device tensors.

        Reading them (`.item()`) would make every step wait for the device: keep it rare.
        """

    def after_epoch(self, trainer: Trainer, row: dict) -> bool | None:
        """Epoch `row["epoch"]` is trained, evaluated, logged and checkpointed.

        Return True to end the run after this epoch (a time budget, early stopping).
        """
        return None

    def on_checkpoint(self, trainer: Trainer, state: dict) -> None:
        """`state` is about to be saved as a checkpoint: add keys to it here."""


class EpochEndCallback(TrainHook):
    """A plain function called with each epoch's metrics row (`train(on_epoch_end=...)`)."""

    def __init__(self, function) -> None:
        self.function = function

    def after_epoch(self, trainer: Trainer, row: dict) -> None:
        self.function(row)


RUN_FOLDER_PLUGINS: dict[str, str] = {"transfer.yaml": "cnnlab.transfer:resume_hook"}


def resume_hooks(run_dir: Path, given: Sequence[TrainHook]) -> list[TrainHook]:
    """The hooks of the plugins whose files `run_dir` holds, but none of a type in `given`."""
    hooks = []
    for file_name, factory_path in RUN_FOLDER_PLUGINS.items():
        if (run_dir / file_name).is_file():
            module_name, factory_name = factory_path.split(":")
            hook = getattr(importlib.import_module(module_name), factory_name)(run_dir)
            if not any(isinstance(other, type(hook)) for other in given):
                hooks.append(hook)
    return hooks
