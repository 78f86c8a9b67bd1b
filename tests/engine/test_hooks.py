"""Trainer hooks: freezing before the optimizer, parameter groups, early stop, checkpoint keys."""

from __future__ import annotations

from pathlib import Path

import torch
from synthetic import synthetic_splits

from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.hooks import TrainHook
from cnnlab.engine.trainer import train

DATA = synthetic_splits(train=128, test=64)


def _config(tmp_path: Path, epochs: int = 2) -> TrainConfig:
    return TrainConfig(
        model="tiny_cnn",
        data="quadrants",
        epochs=epochs,
        batch_size=32,
        schedule="constant",
        device="cpu",
        out=str(tmp_path / "run"),
    )


class FreezeStem(TrainHook):
    """Freezes the stem, keeps its BN in eval mode, gives the rest a tenth of the lr."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.stem_before: dict[str, torch.Tensor] = {}

    def on_model_built(self, trainer) -> None:
        self.calls.append("built")
        trainer.model.stem.requires_grad_(False)
        self.stem_before = {k: v.clone() for k, v in trainer.model.stem.state_dict().items()}

    def param_groups(self, trainer):
        self.calls.append("groups")
        stage = [p for p in trainer.model.parameters() if p.requires_grad]
        return [{"params": stage, "lr": trainer.config.lr / 10}]

    def on_train_epoch_start(self, trainer, epoch: int) -> None:
        trainer.model.stem.eval()

    def after_step(self, trainer, loss, logits) -> None:
        self.calls.append("step")

    def on_checkpoint(self, trainer, state: dict) -> None:
        state["frozen"] = ["stem"]


def test_hooks_freeze_group_and_extend_checkpoints(tmp_path: Path) -> None:
    hook = FreezeStem()
    result = train(_config(tmp_path), data=DATA, progress=False, hooks=[hook])
    assert hook.calls[:2] == ["built", "groups"] and hook.calls.count("step") == 2 * 4
    model_state = load_checkpoint(result.last_checkpoint)
    for name, before in hook.stem_before.items():  # weights and BN statistics untouched
        assert torch.equal(model_state["model_state"][f"stem.{name}"], before), name
    assert not torch.equal(model_state["model_state"]["fc.weight"], torch.zeros(4, 16))
    assert model_state["frozen"] == ["stem"]
    assert model_state["optimizer_state"]["param_groups"][0]["lr"] == _config(tmp_path).lr / 10


class StopAfterFirst(TrainHook):
    def after_epoch(self, trainer, row: dict) -> bool:
        return row["epoch"] >= 1


def test_after_epoch_can_end_the_run(tmp_path: Path) -> None:
    rows: list[dict] = []
    result = train(
        _config(tmp_path, epochs=5),
        data=DATA,
        progress=False,
        hooks=[StopAfterFirst()],
        on_epoch_end=rows.append,
    )
    assert len(result.history) == 1 and [row["epoch"] for row in rows] == [1]
