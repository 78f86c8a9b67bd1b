"""Time budgets: fit the number of epochs to a wall-clock budget, and stop on time.

`TimeBudget` is a `TrainHook` (`train` adds it when `TrainConfig.time_budget` is set). The
clock starts when the hook is made (before the data is loaded, so the budget is the whole run).
It times a few training steps of the first epoch (after two warm-up steps), estimates an
epoch, test evaluation included, and re-plans the run for as many epochs as the remaining
time holds (`Trainer.set_epochs`), so that the one-cycle or cosine schedule ends at the
deadline. After each epoch it re-plans from the epochs' mean wall time so far (evaluation and
checkpoints included) when that changes the count, so a machine that slows down or speeds up
still ends its schedule on time. Every process plans from the same mean (DDP), so all stop
together. Until the first plan, the schedule is laid out for a long run, so the measured steps
train at the schedule's starting learning rate.
"""

from __future__ import annotations

import math
import re
import time
from typing import TYPE_CHECKING

import torch

from cnnlab.engine.hooks import TrainHook
from cnnlab.errors import OptionError

if TYPE_CHECKING:
    from cnnlab.engine.trainer import Trainer

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?)([hms])")
WARMUP_STEPS = 2  # untimed: allocation, cudnn benchmarking, first-touch of the data
TIMED_STEPS = 5
PLANNING_EPOCHS = 1000  # the placeholder length of the run until it is fitted
# Forward-only test evaluation costs about a third of a training step per image.
EVAL_COST = 1 / 3


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `10m`, `90s`, `1h30m`, `1.5h` or a plain `600`."""
    compact = text.strip().lower().replace(" ", "")
    try:
        seconds = float(compact)
    except ValueError:
        parts = _DURATION.findall(compact)
        if not parts or "".join(number + unit for number, unit in parts) != compact:
            raise OptionError(
                f"time budget '{text}' is not a duration; write e.g. 10m, 90s or 1h30m"
            ) from None
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise OptionError(f"time budget '{text}' must be a positive duration, e.g. 10m")
    return seconds


def format_duration(seconds: float) -> str:
    """`95.2` -> '1m35s', `42.0` -> '42s', `0.5` -> '0.5s', `3700` -> '1h01m40s'."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class TimeBudget(TrainHook):
    """Fits the run's epochs to `seconds` of wall time, counted from this hook's creation."""

    def __init__(self, seconds: float, *, reserve: float | None = None) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()
        # Kept free for the end of the run (curves, the last checkpoint): 2%, at most 10 s.
        self.deadline = (
            self.started + seconds - (min(10.0, 0.02 * seconds) if reserve is None else reserve)
        )
        self.epoch_started = 0.0
        self.first_epoch_started = 0.0
        self.steps = 0
        self.timing_since: float | None = None
        self.planned = False

    def on_train_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.epoch_started = time.perf_counter()
        if not self.planned and not self.first_epoch_started:
            self.first_epoch_started = self.epoch_started
            trainer.set_epochs(PLANNING_EPOCHS)

    def after_step(self, trainer: Trainer, loss: torch.Tensor, logits: torch.Tensor) -> None:
        if self.planned:
            return
        self.steps += 1
        if self.steps == WARMUP_STEPS:
            self.timing_since = _synchronized_clock(trainer.device)
        elif self.steps == WARMUP_STEPS + TIMED_STEPS:
            step_seconds = (_synchronized_clock(trainer.device) - self.timing_since) / TIMED_STEPS
            data = trainer.data
            eval_share = EVAL_COST * len(data.test) / max(1, len(data.train))
            epoch = step_seconds * len(trainer.train_loader) * (1 + eval_share)
            self._plan(trainer, epochs_done=0, epoch_seconds=epoch, since=self.first_epoch_started)

    def after_epoch(self, trainer: Trainer, row: dict) -> bool:
        now, done = time.perf_counter(), row["epoch"]
        epoch_seconds = (now - self.first_epoch_started) / done  # evaluation, checkpoints too
        self._plan(trainer, epochs_done=done, epoch_seconds=epoch_seconds, since=now)
        return done >= trainer.config.epochs

    def _plan(
        self, trainer: Trainer, *, epochs_done: int, epoch_seconds: float, since: float
    ) -> None:
        """Re-plan for `epochs_done` plus as many `epoch_seconds` epochs as fit after `since`."""
        epoch_seconds = trainer.context.sum([epoch_seconds])[0] / trainer.context.world_size
        total = epochs_done + math.floor((self.deadline - since) / epoch_seconds)
        if total < 1:
            raise OptionError(
                f"time budget {format_duration(self.seconds)} is too small for one epoch: "
                f"an epoch takes about {format_duration(epoch_seconds)} here "
                f"({format_duration(since - self.started)} went to loading and set-up); "
                "give a larger --time-budget or a smaller model, batch or image size"
            )
        self.planned = True
        total = max(total, epochs_done)
        if total != trainer.config.epochs:
            trainer.set_epochs(total)


def _synchronized_clock(device: torch.device) -> float:
    """The wall clock once the device has finished its queued work (one sync, CUDA only)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
