"""Run under torchrun by `test_ddp.py`: train 2 epochs and record which images each rank saw.

Every image carries its own index in its first two pixels (low byte, high byte); a hook reads
them back from each training batch and the rank writes `shards-rank<R>.json` into OUT:
`{"epoch": [indices...]}`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from synthetic import synthetic_splits

from cnnlab.data.memory import DataSplits, TensorDataset
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.hooks import TrainHook
from cnnlab.engine.trainer import train

IMAGES = 96


class SeenImages(TrainHook):
    """The indices of the images in every training batch, per epoch."""

    def __init__(self) -> None:
        self.seen: dict[int, list[int]] = {}
        self.epoch = 0

    def on_train_epoch_start(self, trainer, epoch: int) -> None:
        self.epoch = epoch
        self.seen[epoch] = []

    def before_step(self, trainer, images: torch.Tensor, labels: torch.Tensor) -> None:
        low, high = (255 * images[:, 0, 0, :2]).round().long().unbind(dim=1)
        self.seen[self.epoch] += (low + 256 * high).tolist()


def indexed_splits() -> DataSplits:
    """The quadrant task with each training image's index written into its first pixels."""
    splits = synthetic_splits(IMAGES, 32)
    images = splits.train.images.clone()
    indices = torch.arange(IMAGES)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = indices % 256, indices // 256
    train = TensorDataset(images, splits.train.labels, splits.train.classes)
    return DataSplits("indexed", train, splits.test, (0.0,), (1.0,))


def main(out: Path) -> None:
    config = TrainConfig(
        model="tiny_cnn", data="indexed", epochs=2, batch_size=16, seed=3, device="cpu",
        out=str(out / "run"),
    )  # fmt: skip
    hook = SeenImages()
    train(config, data=indexed_splits(), progress=False, hooks=[hook])
    rank = os.environ.get("RANK", "0")  # torchrun's; the process group is closed by now
    (out / f"shards-rank{rank}.json").write_text(json.dumps(hook.seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
