"""Time budgets: durations, fitting the epochs to the budget, stopping on time, too-small budgets."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from synthetic import synthetic_splits

from cnnlab.engine.budget import format_duration, parse_duration
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.trainer import train
from cnnlab.errors import OptionError

DATA = synthetic_splits(train=512, test=64)


@pytest.fixture(autouse=True)
def one_thread():
    """Step times this small are stable with one thread; with two on a busy 2-core machine
    every operator waits for a descheduled thread, and steps vary fifty-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(tmp_path: Path, budget: str, **changes) -> TrainConfig:
    values = {
        "model": "tiny_cnn",
        "data": "quadrants",
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.05,
        "device": "cpu",
        "time_budget": budget,
        "out": str(tmp_path / "run"),
    }
    return TrainConfig(**{**values, **changes})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("90s", 90), ("1h30m", 5400), ("1.5h", 5400), ("600", 600), (" 2m 5s", 125)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "10x", "m", "0s", "-5", "5m10"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(OptionError, match="time budget"):
        parse_duration(text)
    with pytest.raises(OptionError, match="time budget"):
        TrainConfig(time_budget=text)


def test_format_duration() -> None:
    durations = [format_duration(s) for s in (0.46, 42.2, 95.2, 3700)]
    assert durations == ["0.5s", "42s", "1m35s", "1h01m40s"]


def test_budget_fits_the_epochs_and_the_schedule_ends_on_time(tmp_path: Path) -> None:
    budget = 8.0
    started = time.perf_counter()
    ended: list[float] = []
    result = train(
        _config(tmp_path, f"{budget}s"),
        data=DATA,
        progress=False,
        on_epoch_end=lambda row: ended.append(time.perf_counter() - started),
    )
    epochs = len(result.history)
    assert result.status == "completed" and epochs > 2  # more than the config's 2 epochs
    # the last epoch ends on time (a little slack for a busy machine), and not much earlier
    assert budget * 0.6 < ended[-1] < budget * 1.15
    assert result.config.epochs == epochs  # the plan ran to its end...
    assert TrainConfig.from_yaml(tmp_path / "run" / "config.yaml").epochs == epochs
    assert result.final["lr"] < 0.05 * 0.01  # ...where the one-cycle schedule reaches zero
    assert max(row["lr"] for row in result.history) > 0.05 * 0.5  # and it rose to its peak


def test_budget_too_small_for_one_epoch_says_what_an_epoch_takes(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=r"too small for one epoch: an epoch takes about [\d.]+s"):
        train(_config(tmp_path, "0.01s"), data=DATA, progress=False)


def test_epochs_of_few_steps_are_fitted_after_the_first_epoch(tmp_path: Path) -> None:
    small = synthetic_splits(train=96, test=32)  # 3 steps per epoch: fewer than are timed
    result = train(_config(tmp_path, "6s"), data=small, progress=False)
    assert result.status == "completed" and len(result.history) >= 2
    assert result.config.epochs == len(result.history)
    assert result.final["lr"] < 0.05 * 0.1
