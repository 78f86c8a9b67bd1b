"""Datasets held in memory as one decoded uint8 tensor: `TensorDataset` and `DataSplits`.

Images are decoded once (from IDX files, archives or the on-disk cache of an image folder) into
an `(N, C, H, W)` uint8 tensor; every epoch then only indexes, moves and augments whole batches
(`cnnlab.data.loader.BatchLoader`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from cnnlab.errors import DataError


@dataclass
class TensorDataset:
    """Decoded images `(N, C, H, W)` uint8 (possibly backed by a memory map) and int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: torch.Tensor) -> TensorDataset:
        """The images and labels at `indices` (copied into memory)."""
        return TensorDataset(self.images[indices], self.labels[indices], self.classes)

    def sample_classes(self, classes: list[int], count: int, seed: int = 0) -> TensorDataset:
        """Up to `count` images of the labels `classes`, drawn with `seed`, relabelled 0, 1, ...
        in the order given (held-out classes for transfer, small subsets for experiments)."""
        chosen = torch.cat([torch.nonzero(self.labels == label).flatten() for label in classes])
        order = torch.randperm(len(chosen), generator=torch.Generator().manual_seed(seed))
        picked = chosen[order[:count]]
        relabel = torch.zeros(len(self.classes), dtype=torch.long)
        relabel[classes] = torch.arange(len(classes))
        names = [self.classes[label] for label in classes]
        return TensorDataset(self.images[picked], relabel[self.labels[picked]], names)


@dataclass(frozen=True)
class SplitRecord:
    """Where a dataset's test split came from; checkpoints keep it so `eval` scores the same images.

    `source` is `own` (the data's own test split: an official test set, a `test/` folder),
    `held_out` (`fraction` of each training class cut with `seed`; `digest` is the SHA-256 of
    the held-out files, so a re-cut can be checked) or `test_data` (another dataset, `where`).
    `dataset` identifies the data it was made from (`dataset_identity`: resolved paths), and
    `where` says in words where the test images are.
    """

    source: str
    dataset: str
    where: str
    fraction: float | None = None
    seed: int | None = None
    digest: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> SplitRecord:
        return cls(**values)


@dataclass
class DataSplits:
    """A dataset ready for training: train and test splits plus their normalization.

    `scored_split` names what `test` holds, the split a run is scored on: `test`, or `val` when
    it is a validation holdout of the training split (its metrics are then `val_acc`, ...).
    `split` records how the test split was made (None for splits built by hand).
    """

    name: str
    train: TensorDataset
    test: TensorDataset
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scored_split: str = "test"
    split: SplitRecord | None = None

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape

    def check_trainable(self) -> None:
        """Refuse data a classifier cannot learn from: one class, or a class with no training image."""
        if len(self.classes) < 2:
            raise DataError(
                f"{self.name} has only one class ({', '.join(self.classes) or 'none'}); "
                "a classifier needs images of at least two classes"
            )
        counts = torch.bincount(self.train.labels, minlength=len(self.classes)).tolist()
        empty = [name for name, count in zip(self.classes, counts, strict=True) if count == 0]
        if empty:
            shown = ", ".join(empty[:10]) + (", ..." if len(empty) > 10 else "")
            raise DataError(
                f"{self.name}: {len(empty)} classes have no training image ({shown}); "
                "add images for them or remove their folders"
            )
