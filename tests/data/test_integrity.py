"""Data that would mislead: symlink loops, trees with both val/ and test/, splits that cannot be
made as asked, data a classifier cannot learn from, a cache folder that cannot be written."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
from imagetrees import write_class_tree

from cnnlab.data import load_dataset, stratified_split
from cnnlab.data.memory import DataSplits, TensorDataset
from cnnlab.errors import CnnlabWarning, DataError, OptionError


def test_a_symlink_loop_in_a_tree_is_an_error_not_followed(tmp_path: Path, cache_dir) -> None:
    root = write_class_tree(tmp_path / "tree", {"ant": 2, "bee": 2})
    os.symlink(root / "ant", root / "ant" / "again")
    with pytest.raises(DataError, match=r"ant/again: symbolic link loop"):
        load_dataset(f"folder:{root}")


def test_a_link_to_a_folder_outside_the_tree_is_followed(tmp_path: Path, cache_dir) -> None:
    root = write_class_tree(tmp_path / "tree", {"ant": 2, "bee": 2})
    extra = write_class_tree(tmp_path / "extra", {"ant": 3})
    os.symlink(extra / "ant", root / "ant" / "more")
    data = load_dataset(f"folder:{root}", val_fraction=0.4)
    assert len(data.train) + len(data.test) == 7


def test_with_val_and_test_trees_test_is_the_test_split_and_val_is_named(
    tmp_path: Path, cache_dir
) -> None:
    root = tmp_path / "tree"
    write_class_tree(root / "train", {"ant": 3, "bee": 3})
    write_class_tree(root / "val", {"ant": 1, "bee": 1})
    write_class_tree(root / "test", {"ant": 2, "bee": 2})
    with pytest.warns(CnnlabWarning, match="testing on test/ and leaving out val/"):
        data = load_dataset(f"folder:{root}")
    assert (len(data.train), len(data.test)) == (6, 4)


def test_a_split_that_cannot_be_honoured_per_class_says_what_it_made() -> None:
    pairs = torch.arange(1000).repeat_interleave(2)  # 1,000 classes of 2 images
    with pytest.warns(CnnlabWarning, match=r"test split holds 1,000 of 2,000 images \(50%\)"):
        stratified_split(pairs, 0.2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CnnlabWarning)
        stratified_split(torch.arange(10).repeat_interleave(10), 0.2, seed=0)  # as asked


def _splits(train_labels: list[int], classes: list[str]) -> DataSplits:
    def dataset(labels: list[int]) -> TensorDataset:
        images = torch.zeros(len(labels), 1, 4, 4, dtype=torch.uint8)
        return TensorDataset(images, torch.tensor(labels), classes)

    return DataSplits("toy", dataset(train_labels), dataset([0]), (0.5,), (0.5,))


def test_one_class_or_a_class_without_training_images_is_refused() -> None:
    with pytest.raises(DataError, match="only one class"):
        _splits([0, 0, 0], ["cat"]).check_trainable()
    with pytest.raises(DataError, match=r"1 classes have no training image \(dog\)"):
        _splits([0, 0, 2], ["cat", "dog", "eel"]).check_trainable()
    _splits([0, 1, 2], ["cat", "dog", "eel"]).check_trainable()


def test_an_unwritable_cache_is_one_line(tmp_path: Path, monkeypatch) -> None:
    root = write_class_tree(tmp_path / "tree", {"ant": 2, "bee": 2})
    (tmp_path / "file").write_text("")
    for cache in ("/proc/cnnlab-cache", str(tmp_path / "file")):
        monkeypatch.setenv("CNNLAB_CACHE", cache)
        with pytest.raises(OptionError, match=r"point \$CNNLAB_CACHE at a writable folder"):
            load_dataset(f"folder:{root}")
