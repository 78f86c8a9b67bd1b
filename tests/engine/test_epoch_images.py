"""What an epoch trains on: batch-norm networks leave out only a tiny last batch, and say so."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from synthetic import synthetic_splits

from cnnlab.engine.config import TrainConfig
from cnnlab.engine.distributed import DistributedContext
from cnnlab.engine.trainer import Trainer


def _trainer(tmp_path: Path, train_images: int) -> Trainer:
    config = TrainConfig.from_dict(
        {"model": "tiny_cnn", "data": "quadrants", "batch_size": 128, "out": str(tmp_path)}
    )
    data = synthetic_splits(train=train_images, test=16)
    return Trainer(config, DistributedContext(torch.device("cpu")), data=data, progress=False)


@pytest.mark.parametrize(
    ("train_images", "steps", "said"),
    [
        (245, 2, "245 train (245 per epoch) / 16 test"),  # 117 left over: half a batch, kept
        (257, 2, "257 train (256 per epoch; the last 1 of each shuffled epoch sit out"),
    ],
)
def test_run_header_says_how_many_images_an_epoch_trains_on(
    tmp_path: Path, train_images: int, steps: int, said: str
) -> None:
    trainer = _trainer(tmp_path, train_images)
    assert len(trainer.train_loader) == steps
    assert said in trainer._describe()
    seen = sum(len(labels) for _, labels in trainer.train_loader)
    assert f"({seen} per epoch" in trainer._describe()
