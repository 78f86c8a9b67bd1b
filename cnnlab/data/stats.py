"""What a dataset holds: class balance, original image sizes, exact pixel mean/std, bad files.

`channel_mean_std` is the one place normalization constants come from: a single streaming pass
over the uint8 pixels that accumulates each channel's sum and sum of squares exactly, so the
result is the true mean/std of all pixels (not a mean of per-image statistics) and does not depend
on how the pass is chunked.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cnnlab.errors import DataError

if TYPE_CHECKING:
    from cnnlab.data.cache import SkippedFile
    from cnnlab.data.datasets import DatasetDetails

_PIXELS_PER_CHUNK = 1 << 22  # float32 copies of about 16 MB per step
_ROW = 256  # 256 * 255**2 < 2**24: a float32 sum of 256 squared pixels is an exact integer


def channel_mean_std(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 `(N, C, H, W)` images, on [0, 1]."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 (N, C, H, W) images, got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise DataError("cannot measure the mean and std of an empty split")
    count, channels, height, width = images.shape
    per_chunk = max(1, _PIXELS_PER_CHUNK // (channels * height * width))
    sums, squares = [0] * channels, [0] * channels
    for start in range(0, count, per_chunk):
        pixels = images[start : start + per_chunk].transpose(0, 1).reshape(channels, -1)
        for channel, (total, square) in enumerate(_exact_sums(pixels)):
            sums[channel] += total
            squares[channel] += square
    pixels = count * height * width
    mean = tuple(total / (pixels * 255) for total in sums)
    # n^2 var = n * sum(x^2) - (sum x)^2, in Python integers: exact, no cancellation.
    std = tuple(
        math.sqrt(pixels * square - total * total) / (pixels * 255)
        for total, square in zip(sums, squares, strict=True)
    )
    return mean, std


def _exact_sums(pixels: torch.Tensor) -> list[tuple[int, int]]:
    """(sum, sum of squares) of each row of uint8 `(C, P)` pixels, as exact integers.

    Float32 sums over rows of 256 pixels are exact and fast (contiguous, vectorized); they are
    added up in float64, exact below 2**53, i.e. for chunks of up to 10**11 pixels.
    """
    whole = pixels.shape[1] // _ROW * _ROW
    rows = pixels[:, :whole].reshape(len(pixels), -1, _ROW).float()
    rest = pixels[:, whole:].double()
    sums = rows.sum(2).sum(1, dtype=torch.float64) + rest.sum(1)
    squares = rows.square_().sum(2).sum(1, dtype=torch.float64) + rest.square_().sum(1)
    return [(int(total), int(square)) for total, square in zip(sums, squares, strict=True)]


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

    out_dir.mkdir(parents=True, exist_ok=True)
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
