"""Datasets as decoded uint8 tensors: named datasets, image trees, their cache and statistics.

`load_dataset(spec)` is the entry point; see `cnnlab.data.datasets` for the specs it takes.
"""

from cnnlab.data.cache import SkippedFile, SkippedFileWarning, decode_images
from cnnlab.data.datasets import (
    DATASET_NAMES,
    DatasetDetails,
    load_dataset,
    load_dataset_details,
)
from cnnlab.data.loader import BatchLoader
from cnnlab.data.memory import DataSplits, TensorDataset
from cnnlab.data.normalization import channel_mean_std
from cnnlab.data.splits import stratified_split, validation_splits
from cnnlab.data.stats import DatasetStats, dataset_stats, plot_stats

__all__ = [
    "DATASET_NAMES",
    "BatchLoader",
    "DataSplits",
    "DatasetDetails",
    "DatasetStats",
    "SkippedFile",
    "SkippedFileWarning",
    "TensorDataset",
    "channel_mean_std",
    "dataset_stats",
    "decode_images",
    "load_dataset",
    "load_dataset_details",
    "plot_stats",
    "stratified_split",
    "validation_splits",
]
