"""Run under torchrun by `test_ddp.py`: two runs, each rank recording what it trained on and
what it ended with, into OUT.

- Shards: `tiny_cnn` for 2 epochs; every image carries its own index in its first two pixels
  (low byte, high byte), a hook reads them back from each training batch, and the rank writes
  `shards-rank<R>.json`: `{"epoch": [indices...]}`.
- Weights: `weights_config` (full-batch plain SGD on `tiny_plain_cnn`); the rank saves its model's
  final state dict as `weights-rank<R>.pt`, to compare with one process's run of the same config.

The script joins the process group itself, so both runs share it (`train` leaves a group it
did not create).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from synthetic import synthetic_splits

from cnnlab.data.memory import DataSplits, TensorDataset
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.hooks import TrainHook
from cnnlab.engine.trainer import train

IMAGES = 96
WEIGHT_STEPS = 3


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


class FinalWeights(TrainHook):
    """This process's model weights after the last epoch."""

    def after_epoch(self, trainer, row: dict) -> None:
        self.state = {name: value.clone() for name, value in trainer.model.state_dict().items()}


def indexed_splits() -> DataSplits:
    """The quadrant task with each training image's index written into its first pixels."""
    splits = synthetic_splits(IMAGES, 32)
    images = splits.train.images.clone()
    indices = torch.arange(IMAGES)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = indices % 256, indices // 256
    train = TensorDataset(images, splits.train.labels, splits.train.classes)
    return DataSplits("indexed", train, splits.test, (0.0,), (1.0,))


def weights_splits() -> DataSplits:
    return synthetic_splits(64, 32)


def weights_config(out: Path) -> TrainConfig:
    """WEIGHT_STEPS steps of plain SGD, each on the whole training set (batch_size is global):
    with two processes, each takes half of every batch, and only the gradient all-reduce makes
    their step the one-process step."""
    return TrainConfig(
        model="tiny_plain_cnn", data="quadrants", epochs=WEIGHT_STEPS, batch_size=64,
        optimizer="sgd", lr=0.2, weight_decay=0.0, seed=5, device="cpu", out=str(out),
    )  # fmt: skip


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        shards = TrainConfig(
            model="tiny_cnn", data="indexed", epochs=2, batch_size=16, seed=3, device="cpu",
            out=str(out / "shards"),
        )  # fmt: skip
        seen = SeenImages()
        train(shards, data=indexed_splits(), progress=False, hooks=[seen])
        (out / f"shards-rank{rank}.json").write_text(json.dumps(seen.seen))
        final = FinalWeights()
        train(weights_config(out / "weights"), data=weights_splits(), progress=False, hooks=[final])
        torch.save(final.state, out / f"weights-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
