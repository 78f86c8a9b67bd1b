"""`cnnlab train` stopped by SIGTERM or Ctrl-C: exit 130 and advice that works."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from synthetic import synthetic_splits, write_image_folder
from typer.testing import CliRunner

from cnnlab.cli import app, train_cmd
from cnnlab.engine.hooks import TrainHook
from cnnlab.engine.runlog import read_metrics

DATA = synthetic_splits(train=128, test=32)


class SignalAt(TrainHook):
    """Sends `signum` to this process before step `step` of epoch `epoch` (0-based)."""

    def __init__(self, signum: int, epoch: int, step: int = 2) -> None:
        self.signum, self.epoch, self.step, self.seen = signum, epoch, step, 0

    def on_train_epoch_start(self, trainer, epoch: int) -> None:
        self.current, self.seen = epoch, 0

    def before_step(self, trainer, images, labels) -> None:
        self.seen += 1
        if self.current == self.epoch and self.seen == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.fixture
def train_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = f"folder:{write_image_folder(DATA, tmp_path / 'images')}"
    common = ["train", "--model", "tiny_cnn", "--data", data, "--channels", "1", "-q"]
    return [*common, "--device", "cpu", "-b", "32", "--out", str(tmp_path / "run")]


def _interrupt(monkeypatch: pytest.MonkeyPatch, hook: TrainHook) -> None:
    real_train = train_cmd.train

    def train_with_hook(*args, hooks=(), **kwargs):
        return real_train(*args, hooks=[*hooks, hook], **kwargs)

    monkeypatch.setattr(train_cmd, "train", train_with_hook)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_first_epoch_interrupt_says_nothing_was_saved(
    tmp_path: Path, train_args: list[str], monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    _interrupt(monkeypatch, SignalAt(signum, epoch=0))
    result = CliRunner().invoke(app, [*train_args, "--epochs", "2"])
    assert result.exit_code == 130, result.output
    assert "nothing was saved" in result.output and "--force" in result.output
    assert "--resume" not in result.output
    monkeypatch.undo()
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    again = CliRunner().invoke(app, [*train_args, "--epochs", "1", "--force"])
    assert again.exit_code == 0, again.output


def test_a_later_interrupt_advises_a_resume_that_works(
    tmp_path: Path, train_args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt(monkeypatch, SignalAt(signal.SIGTERM, epoch=1))
    result = CliRunner().invoke(app, [*train_args, "--epochs", "2"])
    run = tmp_path / "run"
    assert result.exit_code == 130 and f"--resume {run}" in result.output
    monkeypatch.undo()
    resumed = CliRunner().invoke(app, ["train", "--resume", str(run), "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert [row["epoch"] for row in read_metrics(run)] == [1, 2]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is put back
