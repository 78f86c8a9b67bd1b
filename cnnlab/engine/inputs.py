"""What a run feeds its model: the data splits (loaded in rank order) and the batch transforms."""

from __future__ import annotations

from torch import nn

from cnnlab.data.augment import BatchAugment, MultiScale, parse_augment
from cnnlab.data.datasets import load_dataset
from cnnlab.data.memory import DataSplits
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.distributed import DistributedContext
from cnnlab.errors import OptionError
from cnnlab.models import check_input_size, model_info


def load_splits(config: TrainConfig, context: DistributedContext) -> DataSplits:
    """`config.data` loaded; with several processes rank 0 goes first (downloads, caches)."""
    if not context.is_main:
        context.barrier()
    splits = load_dataset(
        config.data,
        image_size=config.image_size,
        channels=config.channels,
        download=config.download,
        val_fraction=config.val_fraction,
        seed=config.seed,
        test_data=config.test_data,
    )
    if context.is_main:
        context.barrier()
    return splits


def describe_test_split(data: DataSplits, val_fraction: float) -> str:
    """One line: where the test split comes from and what, if anything, was held out of train."""
    record, count = data.split, f"{len(data.test):,} images"
    if record is None:
        text = f"test split: the {count} given with the data"
    elif record.source == "held_out":
        text = (
            f"held out {record.fraction:.0%} of train (seed {record.seed}, {count}) as the test "
            "split: the data has no test split"
        )
    else:
        text = f"test split: {record.where} ({count}); nothing held out of train"
    if val_fraction == 0:
        text += "; val_fraction 0: best.pt is the last epoch"
    return text


def build_augment(config: TrainConfig, model: nn.Module, image_shape: tuple) -> BatchAugment:
    """The training batches' transforms, multi-scale resizing last; checked against the model."""
    augment = parse_augment(config.augment)
    augment.check(image_shape)
    if not config.multi_scale:
        return augment
    if model_info(config.model).takes_image_size:
        raise OptionError(
            f"model '{config.model}' has a classifier sized for one input (image_size) and "
            "cannot train at several scales; drop --multi-scale or use a model with global pooling"
        )
    for side in config.multi_scale:
        check_input_size(config.model, (image_shape[0], side, side), **model.model_options)
    return BatchAugment([*augment.transforms, MultiScale(tuple(config.multi_scale))])
