"""One run per folder: a second run is refused, `force` replaces it, a lock keeps writers apart."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic import synthetic_splits

from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.runfolder import claim_run_folder
from cnnlab.engine.trainer import train
from cnnlab.errors import CheckpointError, OptionError

DATA = synthetic_splits(train=128, test=32)


def _config(out: Path, **changes: object) -> TrainConfig:
    values = {"model": "tiny_cnn", "data": "quadrants", "epochs": 1, "batch_size": 32}
    return TrainConfig.from_dict({**values, "device": "cpu", "out": str(out), **changes})


def test_a_second_run_into_a_run_folder_is_refused(tmp_path: Path) -> None:
    train(_config(tmp_path), data=DATA, progress=False)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(OptionError) as refused:
        train(_config(tmp_path, lr=0.05), data=DATA, progress=False)
    message = str(refused.value)
    assert str(tmp_path) in message and "\n" not in message
    assert all(choice in message for choice in ("--resume", "--force", "--out"))
    assert (tmp_path / "last.pt").read_bytes() == before


def test_force_removes_the_old_run_first(tmp_path: Path) -> None:
    train(_config(tmp_path, epochs=2), data=DATA, progress=False)
    (tmp_path / "eval.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    result = train(_config(tmp_path, lr=0.05), data=DATA, progress=False, force=True)
    assert len(result.history) == 1
    for checkpoint in ("last.pt", "best.pt"):
        assert load_checkpoint(tmp_path / checkpoint)["config"]["lr"] == 0.05
    assert not (tmp_path / "eval.json").exists()  # scored the old model
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not a run file: kept


def test_a_folder_in_use_by_another_run_is_refused(tmp_path: Path) -> None:
    # A separate open file of the lock: flock refuses it as it would another process.
    in_use = pytest.raises(OptionError, match="in use by another training run")
    with claim_run_folder(tmp_path), in_use:
        train(_config(tmp_path), data=DATA, progress=False)
    train(_config(tmp_path), data=DATA, progress=False)  # released


def test_an_unfinished_run_without_checkpoint_advises_force_only(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(_config(tmp_path).to_yaml())
    with pytest.raises(OptionError, match="no checkpoint") as refused:
        train(_config(tmp_path), data=DATA, progress=False)
    assert "--resume" not in str(refused.value)


def test_resume_and_force_together_and_a_missing_folder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="give only one"):
        train(_config(tmp_path), data=DATA, progress=False, resume=tmp_path, force=True)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        train(_config(tmp_path), data=DATA, progress=False, resume=tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("out", ["/proc/cnnlab-run", "file"])
def test_an_out_that_cannot_be_a_folder_is_one_line(tmp_path: Path, out: str) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OptionError, match="choose another --out"):
        train(_config(tmp_path / out), data=DATA, progress=False)
