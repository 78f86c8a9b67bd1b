"""Test splits: cut out of the training images (stratified, seeded), or taken from other data.

`stratified_split` cuts a seeded share of each class; `held_out_digest` fingerprints the files
it cut, so a run's recorded split (`SplitRecord`) can be checked when `eval` cuts it again;
`validation_splits` cuts a validation split out of a training split; `replace_test_split` puts a
separate dataset in place of the test split (`--test-data`), labels mapped by class name.
"""

from __future__ import annotations

import hashlib
import os
import warnings

import torch

from cnnlab.data.memory import DataSplits, SplitRecord, TensorDataset
from cnnlab.data.normalization import channel_mean_std
from cnnlab.errors import CnnlabWarning, DataError


def stratified_split(
    labels: torch.Tensor, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted train and test indices with `test_fraction` of each class (rounded) in test.

    Every class with two or more samples keeps at least one on each side (a class of one sample
    is all training). When that rounding moves the test share by more than a quarter of
    `test_fraction` (1,000 classes of 2 images: 50% instead of 20%), a `CnnlabWarning` states
    the split actually made.
    """
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        test_count = min(max(round(len(members) * test_fraction), 1), len(members) - 1)
        test.append(members[:test_count])
        train.append(members[test_count:])
    train_indices, test_indices = torch.cat(train).sort().values, torch.cat(test).sort().values
    made = len(test_indices) / max(len(labels), 1)
    if abs(made - test_fraction) > test_fraction / 4:
        warnings.warn(
            f"val_fraction {test_fraction:g} cannot be honoured per class: the test split holds "
            f"{len(test_indices):,} of {len(labels):,} images ({made:.0%}), as each class keeps "
            "one image on each side (a class of one image is all training)",
            CnnlabWarning,
            stacklevel=2,
        )
    return train_indices, test_indices


def held_out_digest(paths: list[str], root: str | os.PathLike) -> str:
    """SHA-256 of the held-out files' paths relative to `root` (the same wherever the tree is
    reached from: a symlink, a relative path)."""
    names = sorted(os.path.relpath(path, root) for path in paths)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def validation_splits(data: DataSplits, fraction: float, seed: int) -> DataSplits:
    """The training split divided: `fraction` of each class (seeded) becomes the test split.

    The training part gets its own normalization statistics; the test split is left out, and
    stays the one recorded (`data.split`): what the run never trained on, for `eval` to score.
    """
    train_part, validation_part = stratified_split(data.train.labels, fraction, seed)
    train = data.train.subset(train_part)
    mean, std = channel_mean_std(train.images)
    validation = data.train.subset(validation_part)
    return DataSplits(
        f"{data.name} (validation)",
        train,
        validation,
        mean,
        std,
        scored_split="val",
        split=data.split,
    )


def replace_test_split(
    data: DataSplits, test: TensorDataset, test_spec: str, record: SplitRecord
) -> DataSplits:
    """`data` (every image of it training) with `test` from `test_spec` as its test split.

    Test labels are mapped to the training classes by name; a test class the training data
    lacks is a `DataError`. A test set may lack some training classes.
    """
    unknown = sorted(set(test.classes) - set(data.classes))
    if unknown:
        raise DataError(
            f"--test-data {test_spec} has classes {unknown} that the training data "
            f"{data.name} lacks; test on the classes it trains on ({', '.join(data.classes)})"
        )
    index = torch.tensor([data.classes.index(name) for name in test.classes], dtype=torch.long)
    labels = index[test.labels] if len(test) else test.labels
    relabelled = TensorDataset(test.images, labels, data.classes)
    return DataSplits(data.name, data.train, relabelled, data.mean, data.std, split=record)
