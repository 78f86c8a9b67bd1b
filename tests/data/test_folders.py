"""Image trees: `folder:` and `dogs-vs-cats:` specs, decoded from real files written with PIL."""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from imagetrees import decode_code, write_class_tree, write_image
from PIL import Image

from cnnlab.data import SkippedFileWarning, load_dataset, load_dataset_details
from cnnlab.data.images import read_image
from cnnlab.errors import DataError

pytestmark = pytest.mark.usefixtures("cache_dir")


def assert_labels_match_files(dataset) -> None:
    """Every image carries the label of the class folder its file came from."""
    for image, label in zip(dataset.images, dataset.labels.tolist(), strict=True):
        assert decode_code(image)[0] == label


def test_tree_without_splits_is_split_stratified_and_seeded(tmp_path: Path) -> None:
    root = write_class_tree(tmp_path / "tree", {"ant": 10, "bee": 20, "cat": 5})
    data = load_dataset(f"folder:{root}", val_fraction=0.2, seed=3)

    assert data.classes == ["ant", "bee", "cat"]
    assert torch.bincount(data.test.labels).tolist() == [2, 4, 1]
    assert torch.bincount(data.train.labels).tolist() == [8, 16, 4]
    assert_labels_match_files(data.train)
    assert_labels_match_files(data.test)
    every_file = {decode_code(image) for image in torch.cat([data.train.images, data.test.images])}
    assert len(every_file) == 35  # each file lands in exactly one split

    again = load_dataset(f"folder:{root}", val_fraction=0.2, seed=3)
    other_seed = load_dataset(f"folder:{root}", val_fraction=0.2, seed=4)
    assert torch.equal(again.test.images, data.test.images)
    assert not torch.equal(other_seed.test.images, data.test.images)


@pytest.mark.parametrize("test_folder", ["val", "test"])
def test_tree_with_train_and_test_subtrees_uses_them(tmp_path: Path, test_folder: str) -> None:
    write_class_tree(tmp_path / "tree" / "train", {"ant": 4, "bee": 3})
    write_class_tree(tmp_path / "tree" / test_folder, {"ant": 2, "bee": 1})
    data = load_dataset(f"folder:{tmp_path / 'tree'}")

    assert (len(data.train), len(data.test)) == (7, 3)
    assert torch.bincount(data.test.labels).tolist() == [2, 1]
    assert_labels_match_files(data.train)
    assert_labels_match_files(data.test)


def test_mixed_formats_and_modes_are_converted(tmp_path: Path) -> None:
    files = [
        write_image(tmp_path / "tree" / "only" / name, (200, 30, 10), mode=mode)
        for name, mode in [
            ("rgb.jpg", "RGB"),
            ("gray.png", "L"),
            ("gray.jpg", "L"),
            ("rgba.png", "RGBA"),
            ("palette.gif", "P"),
            ("palette.png", "P"),
            ("bitmap.bmp", "RGB"),
            ("cmyk.jpg", "CMYK"),
        ]
    ]
    write_image(tmp_path / "tree" / "other" / "x.png")

    for channels, pil_mode in ((3, "RGB"), (1, "L")):
        data = load_dataset(f"folder:{tmp_path / 'tree'}", val_fraction=0.5, channels=channels)
        assert data.image_shape == (channels, 10, 12)
        images = torch.cat([data.train.images, data.test.images])
        labels = torch.cat([data.train.labels, data.test.labels])
        decoded = sorted(tuple(image[:, 5, 6].tolist()) for image in images[labels == 0])
        expected = []
        for path in files:
            with Image.open(path) as image:
                pixel = image.convert(pil_mode).getpixel((6, 5))
            expected.append(pixel if channels == 3 else (pixel,))
        assert decoded == sorted(expected)


def test_corrupt_and_non_image_files_are_warned_about_and_skipped(tmp_path: Path) -> None:
    root = write_class_tree(tmp_path / "tree", {"a": 3, "b": 3}, suffix=".jpg")
    whole = (root / "a" / "0000.jpg").read_bytes()
    (root / "a" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "b" / "garbage.png").write_bytes(b"not an image at all")
    (root / "b" / "notes.txt").write_text("labels checked by hand")
    (root / "b" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored without a word

    with pytest.warns(SkippedFileWarning) as caught:
        details = load_dataset_details(f"folder:{root}", val_fraction=0.34)

    messages = " ".join(str(warning.message) for warning in caught)
    for name in ("truncated.jpg", "garbage.png", "notes.txt"):
        assert name in messages
    assert ".DS_Store" not in messages
    assert sorted(Path(s.path).name for s in details.skipped) == [
        "garbage.png",
        "notes.txt",
        "truncated.jpg",
    ]
    assert len(details.splits.train) + len(details.splits.test) == 6


def test_empty_class_folder_is_an_error(tmp_path: Path) -> None:
    root = write_class_tree(tmp_path / "tree", {"a": 2})
    (root / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: class folder has no images") as error:
        load_dataset(f"folder:{root}")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "no such directory"),
        (lambda root: root.write_text("x"), "is not a directory"),
        (lambda root: root.mkdir(), "no class sub-folders"),
        (lambda root: write_image(root / "loose.png"), "no class sub-folders"),
    ],
)
def test_missing_or_empty_roots_are_errors(tmp_path: Path, make, message: str) -> None:
    root = tmp_path / "tree"
    make(root)
    with pytest.raises(DataError, match=message):
        load_dataset(f"folder:{root}")


def test_test_class_without_training_folder_is_an_error(tmp_path: Path) -> None:
    write_class_tree(tmp_path / "tree" / "train", {"a": 2})
    write_class_tree(tmp_path / "tree" / "val", {"a": 1, "zebra": 1})
    with pytest.raises(DataError, match="zebra"):
        load_dataset(f"folder:{tmp_path / 'tree'}")


@pytest.mark.parametrize("subfolder", ["", "train"])
def test_dogs_vs_cats_labels_come_from_file_names(tmp_path: Path, subfolder: str) -> None:
    colors = {"cat": (250, 0, 0), "dog": (0, 0, 250)}
    for index in range(10):
        for label, color in colors.items():
            write_image(tmp_path / "kaggle" / subfolder / f"{label}.{index}.jpg", color)
    write_image(tmp_path / "kaggle" / subfolder / "17.jpg")  # Kaggle's unlabelled test naming

    with pytest.warns(SkippedFileWarning, match=r"17\.jpg: no label prefix"):
        data = load_dataset(f"dogs-vs-cats:{tmp_path / 'kaggle'}", val_fraction=0.2)

    assert data.classes == ["cat", "dog"]
    assert torch.bincount(data.test.labels).tolist() == [2, 2]
    for split in (data.train, data.test):
        reds = split.images[:, 0, 0, 0].int()
        assert torch.equal(reds > 128, split.labels == 0)  # cats are red, dogs blue


def test_size_defaults_to_the_common_size_else_224(tmp_path: Path) -> None:
    write_class_tree(tmp_path / "same", {"a": 2, "b": 2}, size=(12, 10))
    assert load_dataset(f"folder:{tmp_path / 'same'}").image_shape == (3, 10, 12)
    assert load_dataset(f"folder:{tmp_path / 'same'}", image_size=8).image_shape == (3, 8, 8)

    write_class_tree(tmp_path / "mixed", {"a": 2, "b": 2}, size=(12, 10))
    write_image(tmp_path / "mixed" / "b" / "wide.png", size=(30, 9))
    details = load_dataset_details(f"folder:{tmp_path / 'mixed'}", val_fraction=0.4)
    assert details.splits.image_shape == (3, 224, 224)
    sizes = torch.cat([details.original_sizes["train"], details.original_sizes["test"]])
    assert Counter(map(tuple, sizes.tolist())) == {(10, 12): 4, (9, 30): 1}


def test_hymenoptera(shared_data: Path) -> None:
    root = shared_data / "hymenoptera" / "hymenoptera_data"
    if not root.is_dir():
        pytest.skip("hymenoptera_data not in shared data")
    data = load_dataset(f"folder:{root}", image_size=32)

    assert data.classes == ["ants", "bees"]
    assert torch.bincount(data.train.labels).tolist() == [124, 121]  # the placeholder GIF counts
    assert torch.bincount(data.test.labels).tolist() == [70, 83]
    assert data.image_shape == (3, 32, 32)
    assert all(0.2 < value < 0.6 for value in data.mean)


def test_cifar10_jpeg_folders_decode_like_pil(shared_data: Path, tmp_path: Path) -> None:
    archive = shared_data / "cifar10" / "cifar10_test_jpg.tar.gz"
    if not archive.is_file():
        pytest.skip("cifar10 archives not in shared data")
    per_class: Counter[str] = Counter()
    with tarfile.open(archive) as tar:  # 20 images of each class: enough, and fast
        for member in tar:
            label = Path(member.name).parent.name
            if member.isfile() and per_class[label] < 20:
                per_class[label] += 1
                tar.extract(member, tmp_path, filter="data")
    root = tmp_path / "cifar10" / "test"
    data = load_dataset(f"folder:{root}", val_fraction=0.25)

    assert len(data.classes) == 10 and data.image_shape == (3, 32, 32)
    assert (len(data.train), len(data.test)) == (150, 50)
    first = sorted((root / data.classes[0]).iterdir())
    decoded = {tuple(read_image(path).flatten()[:64].tolist()) for path in first}
    train_images = data.train.images[data.train.labels == 0]
    matches = sum(tuple(image.flatten()[:64].tolist()) in decoded for image in train_images)
    assert matches == len(train_images)  # libjpeg-turbo gives PIL's pixels, bit for bit
