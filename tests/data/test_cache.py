"""The decoded-image cache: reused while files stay the same, rebuilt when one changes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from imagetrees import pixel_code, write_class_tree, write_image

from cnnlab.data import SkippedFileWarning, cache, decode_images, load_dataset
from cnnlab.data.cache import cache_key
from cnnlab.errors import DataError


def image_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.png"))


def entries(cache_dir: Path) -> dict[str, os.stat_result]:
    """The finished `.npy` arrays in the cache, by name, with their stat results."""
    return {path.name: path.stat() for path in (cache_dir / "images").glob("*.npy")}


def test_second_load_reuses_the_array_without_writing(tmp_path: Path, cache_dir: Path) -> None:
    root = write_class_tree(tmp_path / "tree", {"a": 4, "b": 4})
    first = load_dataset(f"folder:{root}")
    written = entries(cache_dir)
    assert len(written) == 1

    second = load_dataset(f"folder:{root}")
    reused = entries(cache_dir)
    assert reused.keys() == written.keys()
    for name, stat in reused.items():  # same file, never rewritten
        assert (stat.st_ino, stat.st_mtime_ns) == (written[name].st_ino, written[name].st_mtime_ns)
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.labels, second.test.labels)


def test_changed_file_changes_the_key(tmp_path: Path, cache_dir: Path) -> None:
    root = write_class_tree(tmp_path / "tree", {"a": 3, "b": 3})
    files = image_files(root)
    key = cache_key(files, None, 3)
    load_dataset(f"folder:{root}")

    stat = files[0].stat()
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touch
    assert cache_key(files, None, 3) != key
    write_image(files[1], (255, 255, 255))  # new content
    load_dataset(f"folder:{root}")
    assert len(entries(cache_dir)) == 2


def test_key_covers_resolution_channels_and_file_list(tmp_path: Path, cache_dir: Path) -> None:
    files = image_files(write_class_tree(tmp_path / "tree", {"a": 3}))
    keys = {
        cache_key(files, None, 3),
        cache_key(files, 16, 3),
        cache_key(files, None, 1),
        cache_key(files[:-1], None, 3),
    }
    assert len(keys) == 4


def test_a_new_decoder_version_decodes_again(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry decoded the old way is never reused once decoding changes."""
    files = image_files(write_class_tree(tmp_path / "tree", {"a": 3}))
    decode_images(files, size=None, channels=3)
    old = cache_key(files, None, 3)
    assert set(entries(cache_dir)) == {f"{old}.npy"}

    monkeypatch.setattr(cache, "DECODER_VERSION", cache.DECODER_VERSION + 1)
    new = cache_key(files, None, 3)
    decode_images(files, size=None, channels=3)
    assert new != old and set(entries(cache_dir)) == {f"{old}.npy", f"{new}.npy"}


def test_cache_entry_is_the_memory_mapped_array(tmp_path: Path, cache_dir: Path) -> None:
    files = image_files(write_class_tree(tmp_path / "tree", {"a": 2, "b": 3}))
    decoded = decode_images(files, size=None, channels=3)
    (array_path,) = (cache_dir / "images").glob("*.npy")
    on_disk = np.load(array_path, mmap_mode="r")

    assert on_disk.shape == (5, 3, 10, 12)
    assert torch.equal(decoded.images, torch.from_numpy(np.array(on_disk)))
    expected = [pixel_code(label, index) for label, index in [(0, 0), (0, 1), (1, 0)]]
    assert [tuple(image[:, 0, 0].tolist()) for image in decoded.images[:3]] == expected


def test_skipped_files_are_remembered_and_reported_again(tmp_path: Path, cache_dir: Path) -> None:
    root = write_class_tree(tmp_path / "tree", {"a": 3})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    files = image_files(root)

    for _ in range(2):  # decoding, then from the cache
        with pytest.warns(SkippedFileWarning, match="broken.png"):
            decoded = decode_images(files, size=8, channels=1)
        assert decoded.images.shape == (3, 1, 8, 8)
        assert decoded.kept.tolist() == [0, 1, 2]  # broken.png sorts last
        assert [Path(skipped.path).name for skipped in decoded.skipped] == ["broken.png"]
        assert decoded.original_sizes.tolist() == [[10, 12]] * 3
    assert len(entries(cache_dir)) == 1


def test_failed_decode_leaves_no_entry_behind(tmp_path: Path, cache_dir: Path) -> None:
    broken = [tmp_path / f"{index}.jpg" for index in range(3)]
    for path in broken:
        path.write_bytes(b"\xff\xd8\xff truncated")
    with pytest.raises(DataError, match="none of the 3 files is a readable image"):
        decode_images(broken, size=None, channels=3)
    assert list((cache_dir / "images").iterdir()) == []  # no array, metadata or partial file
