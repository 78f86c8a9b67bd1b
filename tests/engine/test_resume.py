"""Resume: a run killed after an epoch and resumed ends exactly as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from synthetic import synthetic_splits, write_image_folder
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.runlog import read_metrics
from cnnlab.engine.trainer import train
from cnnlab.errors import CheckpointError, OptionError

DATA = synthetic_splits(train=256, test=64)
TIMINGS = ("seconds", "images_per_sec")


class Killed(Exception):
    """Stands for the process dying right after an epoch's checkpoint is written."""


def _kill_after(epoch: int):
    def callback(row: dict) -> None:
        if row["epoch"] == epoch:
            raise Killed

    return callback


def _config(out: Path, **changes: object) -> TrainConfig:
    # Dropout, augmentation, momentum and a cosine schedule: every piece of state matters.
    values = {
        "model": "tiny_cnn",
        "data": "quadrants",
        "epochs": 3,
        "batch_size": 32,
        "lr": 0.1,
        "schedule": "cosine",
        "augment": ["flip", "crop:2", "cutout:3"],
        "device": "cpu",
        "out": str(out),
    }
    return TrainConfig.from_dict({**values, **changes})


def _without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def test_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    straight = train(_config(tmp_path / "straight"), data=DATA, progress=False)
    interrupted = _config(tmp_path / "interrupted")
    with pytest.raises(Killed):
        train(interrupted, data=DATA, progress=False, on_epoch_end=_kill_after(1))
    assert len(read_metrics(tmp_path / "interrupted")) == 1
    torch.manual_seed(12345)  # the resumed run must not depend on the global state it meets
    resumed = train(interrupted, data=DATA, progress=False, resume=tmp_path / "interrupted")
    assert resumed.status == "completed"
    assert _without_timings(resumed.history) == _without_timings(straight.history)
    assert _without_timings(read_metrics(tmp_path / "interrupted")) == _without_timings(
        read_metrics(tmp_path / "straight")
    )
    final_weights = load_checkpoint(resumed.last_checkpoint)["model_state"]
    expected_weights = load_checkpoint(straight.last_checkpoint)["model_state"]
    assert final_weights.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        assert torch.equal(final_weights[name], tensor), name


def test_same_seed_same_run_other_seed_other_run(tmp_path: Path) -> None:
    first = train(_config(tmp_path / "a", epochs=1), data=DATA, progress=False)
    again = train(_config(tmp_path / "b", epochs=1), data=DATA, progress=False)
    other = train(_config(tmp_path / "c", epochs=1, seed=1), data=DATA, progress=False)
    assert _without_timings(first.history) == _without_timings(again.history)
    assert first.final["train_loss"] != other.final["train_loss"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"model": "tiny_aux_cnn"}, "model 'tiny_cnn' -> 'tiny_aux_cnn'"),
        ({"lr": 0.5}, "lr 0.1 -> 0.5"),
        ({"optimizer": "adam"}, "optimizer 'momentum' -> 'adam'"),
        ({"batch_size": 64, "seed": 3}, "batch_size 32 -> 64; seed 0 -> 3"),
        ({"schedule": "onecycle"}, "schedule 'cosine' -> 'onecycle'"),
    ],
)
def test_resume_refuses_changed_options_naming_each(
    tmp_path: Path, change: dict, named: str
) -> None:
    with pytest.raises(Killed):
        train(_config(tmp_path, epochs=2), data=DATA, progress=False, on_epoch_end=_kill_after(1))
    saved = (tmp_path / "config.yaml").read_text()
    with pytest.raises(CheckpointError, match=f"changed options \\({named}\\)"):
        train(_config(tmp_path, **change), data=DATA, progress=False, resume=tmp_path)
    assert (tmp_path / "config.yaml").read_text() == saved  # nothing recorded that did not run


def test_resume_of_a_finished_run_asks_for_more_epochs(tmp_path: Path) -> None:
    config = _config(tmp_path, epochs=1)
    train(config, data=DATA, progress=False)
    with pytest.raises(OptionError, match="already trained 1 epochs; pass --epochs above 1"):
        train(config, data=DATA, progress=False, resume=tmp_path)
    extended = train(config.replace(epochs=2), data=DATA, progress=False, resume=tmp_path)
    assert [row["epoch"] for row in extended.history] == [1, 2]


def test_resume_without_a_checkpoint_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        train(_config(tmp_path), data=DATA, progress=False, resume=tmp_path / "missing")


def test_cli_resume_continues_from_the_run_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = f"folder:{write_image_folder(DATA, tmp_path / 'images')}"
    run = tmp_path / "run"
    runner = CliRunner()
    common = ["train", "--model", "tiny_cnn", "--data", data, "--channels", "1", "-q"]
    first = runner.invoke(app, [*common, "--epochs", "1", "--out", str(run), "--device", "cpu"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2", "-q"])
    assert second.exit_code == 0, second.output
    assert [row["epoch"] for row in read_metrics(run)] == [1, 2]
    assert TrainConfig.from_yaml(run / "config.yaml").epochs == 2
    missing = runner.invoke(app, ["train", "--resume", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "not a cnnlab run folder" in missing.output
