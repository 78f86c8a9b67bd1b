"""Scoring a checkpoint: `evaluate_checkpoint` loads the data and scores the right split.

On the run's own data (however its path is spelled: compared by `dataset_identity`), the test
split is the one the run was tested on, as its checkpoint records it (`SplitRecord`): the
data's own test split, the `--test-data`, or the share held out of the training images, cut
again with the recorded fraction and seed and checked against the recorded digest, so no
training image is scored. Other data is scored on its own test split if it has one, else on
every image. `cnnlab eval` is this plus its report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.data.datasets import dataset_identity, has_own_test_split, load_dataset
from cnnlab.data.loader import BatchLoader
from cnnlab.data.memory import DataSplits, SplitRecord, TensorDataset
from cnnlab.engine.checkpoint import model_from_checkpoint, resolve_checkpoint_path
from cnnlab.engine.distributed import resolve_device
from cnnlab.engine.evaluate import EvalResult, evaluate
from cnnlab.errors import CheckpointError, DataError, UnknownNameError

SPLITS = ("test", "train", "all")


@dataclass
class CheckpointEvaluation:
    """A checkpoint's scores on `split` of `data`, with what was scored (`images`)."""

    result: EvalResult
    checkpoint: Path
    state: dict  # the checkpoint
    data: str
    split: str
    images: TensorDataset
    device: torch.device
    flip: bool


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | None = None,
    split: str | None = None,
    *,
    batch_size: int = 256,
    device: str = "auto",
    amp: bool = False,
    flip: bool | None = None,
) -> CheckpointEvaluation:
    """Score `checkpoint` (a file or run folder) on `split` (test, train or all) of `data`.

    `data` defaults to the run's own, whose default split is the one the run was tested on;
    other data defaults to its own test split, else all of it. `flip` defaults to the run's
    test-time flips.
    """
    if split is not None and split not in SPLITS:
        raise UnknownNameError("split", split, SPLITS)
    checkpoint_file = resolve_checkpoint_path(checkpoint)
    torch_device = resolve_device(device)
    model, state = model_from_checkpoint(checkpoint_file, device=torch_device)
    trained_on = state.get("config") or {}
    own = data is None or _is_own_data(data, trained_on, state.get("split"))
    data = data or trained_on.get("data")
    if data is None:
        raise CheckpointError(f"{checkpoint_file} does not record its dataset; pass --data")
    channels, size, _ = state["image_shape"]
    if own:
        splits = run_splits(state, data)
        split = split or "test"
    else:
        splits = load_dataset(data, image_size=size, channels=channels)
        split = split or ("test" if has_own_test_split(data) else "all")
    _check_classes(state["classes"], splits.train.classes, data)
    images = _split_of(splits, split)
    loader = BatchLoader(
        images, batch_size, mean=tuple(state["mean"]), std=tuple(state["std"]), device=torch_device
    )
    if flip is None:
        flip = bool(trained_on.get("test_time_flip", False))
    result = evaluate(model, loader, state["classes"], amp=amp, flip=flip)
    return CheckpointEvaluation(
        result, checkpoint_file, state, data, split, images, torch_device, flip
    )


def run_splits(state: dict, data: str) -> DataSplits:
    """The checkpoint's data (`data`, its spec as spelled now) split as the run's was."""
    trained_on = state.get("config") or {}
    channels, size, _ = state["image_shape"]
    load = {"image_size": size, "channels": channels}
    record = SplitRecord.from_dict(state["split"]) if state.get("split") else None
    if trained_on.get("test_data"):
        return load_dataset(data, **load, test_data=trained_on["test_data"])
    if record is None or record.source != "held_out":  # own test split, or an older checkpoint
        fraction = trained_on.get("val_fraction") or 0.2
        return load_dataset(data, **load, val_fraction=fraction, seed=trained_on.get("seed", 0))
    splits = load_dataset(data, **load, val_fraction=record.fraction, seed=record.seed)
    if splits.split is None or splits.split.digest != record.digest:
        raise DataError(
            f"{data} no longer gives the images the run held out ({record.where}): its files "
            "changed since training, so they cannot be told from the training images; "
            "evaluate on other data with --data"
        )
    return splits


def _is_own_data(data: str, trained_on: dict, split: dict | None) -> bool:
    """Whether `data` names the dataset the run trained on, however either spec is spelled."""
    identity = dataset_identity(data)
    if split is not None:
        return identity == split["dataset"]
    return "data" in trained_on and identity == dataset_identity(trained_on["data"])


def _split_of(splits: DataSplits, split: str) -> TensorDataset:
    """The test or train split, or both together (`all`)."""
    if split != "all":
        return splits.test if split == "test" else splits.train
    train, test = splits.train, splits.test
    images = torch.cat([train.images, test.images])
    return TensorDataset(images, torch.cat([train.labels, test.labels]), train.classes)


def _check_classes(trained: list[str], found: list[str], data: str) -> None:
    """Refuse data whose classes are not the checkpoint's, in the same order."""
    if trained == found:
        return
    if len(trained) != len(found):
        raise CheckpointError(
            f"the checkpoint was trained on {len(trained)} classes but {data} has {len(found)}; "
            "evaluate on the dataset the model was trained on"
        )
    index = next(i for i, (a, b) in enumerate(zip(trained, found, strict=True)) if a != b)
    raise CheckpointError(
        f"class {index} is '{trained[index]}' in the checkpoint but '{found[index]}' in {data}; "
        "evaluate on the dataset the model was trained on"
    )
