"""One decoded copy of a study's dataset, memory-mapped by every worker process.

The first runner decodes the data once (`load_dataset`) and saves the uint8 images as `.npy`
files in `<study>/data/<key>/`; every worker then maps them read-only (`np.load(mmap_mode="r")`),
so N workers share one copy in the page cache instead of each decoding and holding its own.
`key` is a hash of what decides the data (dataset, image size, channels, split fraction, number
of training images, validation holdout), so a factor such as `image_size` gets its own copy.
Trees without a test split are split with seed 0 for every run: seeds vary the training, not
the test set; `meta.json` keeps that split's record, which each run's checkpoints carry on, so
`cnnlab eval` scores the same held-out images. A study with `validation` also gets a copy whose training split is the full
copy's less a stratified holdout (seed 0 for every run), and whose test split is that holdout.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.datasets import load_dataset
from cnnlab.data.memory import DataSplits, SplitRecord, TensorDataset
from cnnlab.data.normalization import channel_mean_std
from cnnlab.data.splits import validation_splits
from cnnlab.engine.config import TrainConfig
from cnnlab.errors import OptionError
from cnnlab.fileio import atomic_write, atomic_write_text

DATA_FIELDS = ("data", "image_size", "channels", "val_fraction")
_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
HOLDOUT_SEED = 0  # the same validation images for every run and seed


def data_key(config: TrainConfig, train_images: int | None, holdout: float | None = None) -> str:
    """A short hash of the fields that decide which images a run sees."""
    values = {name: getattr(config, name) for name in DATA_FIELDS} | {"train_images": train_images}
    if config.test_data is not None:  # absent otherwise, as `holdout`
        values["test_data"] = config.test_data
    if holdout is not None:  # absent otherwise: the keys of studies without it stay the same
        values["holdout"] = holdout
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def prepare_data(
    study: Path,
    config: TrainConfig,
    train_images: int | None,
    data: DataSplits | None = None,
    holdout: float | None = None,
) -> Path:
    """The folder holding `config`'s data as `.npy` files, decoding it first if needed.

    `data` is used instead of loading `config.data` (splits already in memory). `holdout`:
    that stratified fraction of the training split becomes the test split (cut from the full
    copy, which is prepared first). Concurrent runners take a file lock, so the data is
    decoded once.
    """
    full = None if holdout is None else prepare_data(study, config, train_images, data)
    folder = study / "data" / data_key(config, train_images, holdout)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "meta.json").is_file():
            if full is None:
                splits = _load(config, train_images, data)
            else:
                splits = validation_splits(open_data(full), holdout, HOLDOUT_SEED)
            _write(folder, splits)
    return folder


def open_data(folder: Path) -> DataSplits:
    """The splits saved by `prepare_data`, images memory-mapped read-only."""
    meta = json.loads((folder / "meta.json").read_text())
    arrays = {}
    with warnings.catch_warnings():  # the mapping is read-only, and nothing writes to it
        warnings.simplefilter("ignore", UserWarning)
        for name in _ARRAYS:
            mode = "r" if name.endswith("images") else None
            arrays[name] = torch.from_numpy(np.load(folder / f"{name}.npy", mmap_mode=mode))
    classes = meta["classes"]
    record = meta.get("split")
    return DataSplits(
        meta["name"],
        TensorDataset(arrays["train_images"], arrays["train_labels"], classes),
        TensorDataset(arrays["test_images"], arrays["test_labels"], classes),
        tuple(meta["mean"]),
        tuple(meta["std"]),
        scored_split=meta.get("scored_split", "test"),
        split=SplitRecord.from_dict(record) if record else None,
    )


def _load(config: TrainConfig, train_images: int | None, data: DataSplits | None) -> DataSplits:
    if data is None:
        fields = ("image_size", "channels", "download", "val_fraction", "test_data")
        data = load_dataset(config.data, **{name: getattr(config, name) for name in fields}, seed=0)
    if train_images is None:
        return data
    if train_images > len(data.train):
        raise OptionError(
            f"train_images {train_images} exceeds the {len(data.train)} training images of {data.name}"
        )
    train = data.train.subset(torch.arange(train_images))
    mean, std = channel_mean_std(train.images)
    return DataSplits(
        data.name, train, data.test, mean, std, scored_split=data.scored_split, split=data.split
    )


def _write(folder: Path, data: DataSplits) -> None:
    arrays = {
        "train_images": data.train.images,
        "train_labels": data.train.labels,
        "test_images": data.test.images,
        "test_labels": data.test.labels,
    }
    for name, tensor in arrays.items():
        with atomic_write(folder / f"{name}.npy") as file:
            np.save(file, tensor.contiguous().numpy())
    meta = {
        "name": data.name,
        "classes": list(data.classes),
        "mean": data.mean,
        "std": data.std,
        "scored_split": data.scored_split,
        "split": data.split.to_dict() if data.split is not None else None,
    }
    atomic_write_text(folder / "meta.json", json.dumps(meta))  # written last: marks it complete
