"""Split folders spelled every common way (`Training/`, `Test/`, `valid/`), ambiguous trees
refused, and separate test data (`test_data`), on image trees written with PIL."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from imagetrees import decode_code, pixel_code, write_class_tree, write_image

from cnnlab.data import load_dataset
from cnnlab.errors import CnnlabWarning, DataError

pytestmark = pytest.mark.usefixtures("cache_dir")
TEST_INDEX = 50  # test images are coloured from this index on, apart from the training ones


def write_test_tree(root: Path, counts: dict[str, int]) -> Path:
    """Like `write_class_tree`, with indices from `TEST_INDEX` so each file is told apart."""
    for label, (name, count) in enumerate(sorted(counts.items())):
        for index in range(TEST_INDEX, TEST_INDEX + count):
            write_image(root / name / f"{index}.png", pixel_code(label, index))
    return root


def codes(images: torch.Tensor) -> set[tuple[int, int]]:
    return {decode_code(image) for image in images}


@pytest.mark.parametrize(
    ("train_name", "test_name"),
    [
        ("Training", "Testing"),
        ("Train", "Test"),
        ("train", "valid"),
        ("TRAIN", "Validation"),
        ("training", "val"),
    ],
)
def test_split_folders_are_recognised_in_any_common_spelling(
    tmp_path: Path, train_name: str, test_name: str
) -> None:
    write_class_tree(tmp_path / "tree" / train_name, {"ant": 4, "bee": 3})
    write_test_tree(tmp_path / "tree" / test_name, {"ant": 2, "bee": 1})
    data = load_dataset(f"folder:{tmp_path / 'tree'}")

    assert data.classes == ["ant", "bee"]
    assert codes(data.train.images) == {(0, i) for i in range(4)} | {(1, i) for i in range(3)}
    assert codes(data.test.images) == {(0, 50), (0, 51), (1, 50)}
    assert torch.bincount(data.test.labels).tolist() == [2, 1]
    assert data.split.source == "own" and test_name in data.split.where


@pytest.mark.parametrize(
    ("folders", "message"),
    [
        (("train", "val", "valid"), "both val/ and valid/ name the val split"),
        (("Test", "train", "testing"), "both Test/ and testing/ name the test split"),
        (
            ("train", "test", "cats"),
            r"split folders \(test/, train/\) beside other folders \(cats/\)",
        ),
        (("Testing", "cats", "dogs"), "beside other folders"),
        (("valid", "test"), "no training split"),
    ],
)
def test_ambiguous_trees_are_refused_in_one_line(
    tmp_path: Path, folders: tuple[str, ...], message: str
) -> None:
    for folder in folders:
        write_class_tree(tmp_path / "tree" / folder, {"ant": 2, "bee": 2})
    with pytest.raises(DataError, match=message):
        load_dataset(f"folder:{tmp_path / 'tree'}")


def test_with_test_and_val_folders_test_is_scored_and_val_left_out(tmp_path: Path) -> None:
    write_class_tree(tmp_path / "tree" / "Train", {"ant": 3, "bee": 3})
    write_test_tree(tmp_path / "tree" / "Valid", {"ant": 2, "bee": 2})
    write_test_tree(tmp_path / "tree" / "Test", {"ant": 1, "bee": 1})
    with pytest.warns(CnnlabWarning, match="testing on Test/ and leaving out Valid/"):
        data = load_dataset(f"folder:{tmp_path / 'tree'}")
    assert (len(data.train), len(data.test)) == (6, 2)


def test_dogs_vs_cats_reads_a_training_folder_spelled_otherwise(tmp_path: Path) -> None:
    for index in range(5):
        write_image(tmp_path / "kaggle" / "Training" / f"cat.{index}.png", (250, 0, 0))
        write_image(tmp_path / "kaggle" / "Training" / f"dog.{index}.png", (0, 0, 250))
    data = load_dataset(f"dogs-vs-cats:{tmp_path / 'kaggle'}", val_fraction=0.2)
    assert data.classes == ["cat", "dog"]
    assert len(data.train) + len(data.test) == 10


def test_test_data_trains_on_every_training_image(tmp_path: Path) -> None:
    """A flat Kaggle folder and a separate class-folder test set: nothing is held out."""
    for index in range(5):
        write_image(tmp_path / "kaggle" / f"cat.{index}.png", pixel_code(0, index))
        write_image(tmp_path / "kaggle" / f"dog.{index}.png", pixel_code(1, index))
    write_test_tree(tmp_path / "photos", {"cat": 2, "dog": 3})
    data = load_dataset(
        f"dogs-vs-cats:{tmp_path / 'kaggle'}", test_data=f"folder:{tmp_path / 'photos'}"
    )
    assert len(data.train) == 10
    assert codes(data.test.images) == {(0, 50), (0, 51), (1, 50), (1, 51), (1, 52)}
    assert [decode_code(image)[0] for image in data.test.images] == data.test.labels.tolist()
    assert data.split.source == "test_data"


def test_test_data_lacking_a_class_keeps_the_training_labels(tmp_path: Path) -> None:
    write_class_tree(tmp_path / "train", {"ant": 3, "bee": 3, "cat": 3})
    write_test_tree(tmp_path / "test", {"cat": 2})  # the one class sits at label 2, not 0
    data = load_dataset(f"folder:{tmp_path / 'train'}", test_data=f"folder:{tmp_path / 'test'}")
    assert data.test.labels.tolist() == [2, 2]
    assert data.test.classes == ["ant", "bee", "cat"]


def test_test_data_with_other_classes_is_one_error(tmp_path: Path) -> None:
    write_class_tree(tmp_path / "train", {"ant": 3, "bee": 3})
    write_test_tree(tmp_path / "test", {"ant": 1, "zebra": 1})
    with pytest.raises(DataError, match=r"has classes \['zebra'\] that the training data"):
        load_dataset(f"folder:{tmp_path / 'train'}", test_data=f"folder:{tmp_path / 'test'}")


def test_val_fraction_zero_needs_a_test_split(tmp_path: Path) -> None:
    write_class_tree(tmp_path / "flat", {"ant": 3, "bee": 3})
    with pytest.raises(DataError, match="no test split and val_fraction 0 holds nothing out"):
        load_dataset(f"folder:{tmp_path / 'flat'}", val_fraction=0)
    write_class_tree(tmp_path / "split" / "train", {"ant": 3, "bee": 3})
    write_test_tree(tmp_path / "split" / "test", {"ant": 1, "bee": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_dataset(f"folder:{tmp_path / 'split'}", val_fraction=0)
    assert (len(data.train), len(data.test)) == (6, 2)
