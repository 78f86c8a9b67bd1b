"""What a dataset holds: class balance, original image sizes, exact pixel mean/std, bad files.

The mean/std come from `cnnlab.data.normalization.channel_mean_std`, the same numbers training
normalizes with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cnnlab.data.normalization import channel_mean_std
from cnnlab.fileio import writable_directory

if TYPE_CHECKING:
    from cnnlab.data.cache import SkippedFile
    from cnnlab.data.datasets import DatasetDetails


@dataclass
class SplitStats:
    """One split: image count, images per class, pixel mean/std, original sizes (min/median/max)."""

    images: int
    class_counts: dict[str, int]
    mean: tuple[float, ...] | None  # None for an empty split
    std: tuple[float, ...] | None
    height: dict[str, float]  # of the original files, before any resizing
    width: dict[str, float]


@dataclass
class DatasetStats:
    """Everything `cnnlab data stats` reports; `to_dict()` is its JSON form."""

    dataset: str
    classes: list[str]
    image_shape: tuple[int, int, int]  # (C, H, W) as loaded, after resizing
    splits: dict[str, SplitStats]
    skipped_files: list[SkippedFile]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dataset_stats(details: DatasetDetails) -> DatasetStats:
    """Count, measure and summarize both splits of a loaded dataset."""
    data = details.splits
    splits = {}
    for name, split in (("train", data.train), ("test", data.test)):
        if name == "train":
            mean, std = data.mean, data.std  # measured once, at load time
        else:
            mean, std = channel_mean_std(split.images) if len(split) else (None, None)
        counts = torch.bincount(split.labels, minlength=len(data.classes)).tolist()
        sizes = details.original_sizes[name].numpy()
        splits[name] = SplitStats(
            images=len(split),
            class_counts=dict(zip(data.classes, counts, strict=True)),
            mean=mean,
            std=std,
            height=_spread(sizes[:, 0]),
            width=_spread(sizes[:, 1]),
        )
    return DatasetStats(data.name, data.classes, data.image_shape, splits, details.skipped)


def _spread(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    return {"min": int(values.min()), "median": float(np.median(values)), "max": int(values.max())}


def plot_stats(details: DatasetDetails, out_dir: Path) -> list[Path]:
    """Write `class_balance.png` and `image_sizes.png` into `out_dir`; return their paths."""
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas on save

    writable_directory(out_dir, "choose another --out")
    data = details.splits
    splits = (("train", data.train), ("test", data.test))
    class_count = len(data.classes)
    kind, _, path = data.name.partition(":")
    title = f"{kind}:{Path(path).name}" if path else kind  # the tree's folder, not its full path

    balance = Figure(figsize=(max(6.0, 0.3 * class_count), 4.0), layout="constrained")
    axes = balance.add_subplot()
    positions = np.arange(class_count)
    for offset, (name, split) in enumerate(splits):
        counts = torch.bincount(split.labels, minlength=class_count).numpy()
        axes.bar(positions + (offset - 0.5) * 0.4, counts, width=0.4, label=name)
    axes.set_xticks(positions, data.classes, rotation=90 if class_count > 10 else 0)
    axes.set(ylabel="images", title=f"{title}: images per class")
    axes.legend()

    sizes = Figure(figsize=(5.0, 5.0), layout="constrained")
    axes = sizes.add_subplot()
    for name, _ in splits:
        pairs, counts = np.unique(details.original_sizes[name].numpy(), axis=0, return_counts=True)
        if len(pairs):  # marker area grows with the number of files of that size
            axes.scatter(pairs[:, 1], pairs[:, 0], s=12 * np.sqrt(counts), alpha=0.5, label=name)
    axes.set(xlabel="width (px)", ylabel="height (px)", title=f"{title}: original sizes")
    axes.legend()

    written = [out_dir / "class_balance.png", out_dir / "image_sizes.png"]
    for figure, path in zip((balance, sizes), written, strict=True):
        figure.savefig(path, dpi=100)
    return written
