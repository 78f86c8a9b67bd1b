"""Dataset statistics: exact streaming mean/std, class balance, original sizes, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from imagetrees import write_class_tree, write_image
from PIL import Image

from cnnlab.data import (
    SkippedFileWarning,
    channel_mean_std,
    dataset_stats,
    load_dataset_details,
    plot_stats,
)

pytestmark = pytest.mark.usefixtures("cache_dir")


@pytest.mark.parametrize("shape", [(5, 3, 7, 9), (70, 3, 150, 150), (2, 1, 1, 1)])
def test_mean_std_equal_a_direct_float64_computation(shape: tuple[int, ...]) -> None:
    images = torch.randint(0, 256, shape, dtype=torch.uint8)  # the middle shape spans two chunks
    mean, std = channel_mean_std(images)

    pixels = images.double().div(255).transpose(0, 1).flatten(1)
    assert mean == pytest.approx(pixels.mean(1).tolist(), rel=1e-12, abs=1e-15)
    assert std == pytest.approx(pixels.std(1, correction=0).tolist(), rel=1e-12, abs=1e-15)


def test_std_is_over_all_pixels_not_a_mean_of_per_image_stds() -> None:
    images = torch.stack([torch.zeros(1, 4, 4), torch.full((1, 4, 4), 255.0)]).to(torch.uint8)
    assert channel_mean_std(images) == ((0.5,), (0.5,))  # each image alone has std 0


def test_extreme_values_stay_exact() -> None:
    images = torch.full((3, 2, 40, 40), 255, dtype=torch.uint8)
    images[:, 1] = 0
    assert channel_mean_std(images) == ((1.0, 0.0), (0.0, 0.0))


def test_dataset_stats_count_classes_sizes_and_skipped_files(tmp_path: Path) -> None:
    root = write_class_tree(tmp_path / "tree" / "train", {"a": 4, "b": 2}, size=(12, 10))
    write_class_tree(tmp_path / "tree" / "val", {"a": 1, "b": 2}, size=(12, 10))
    write_image(root / "b" / "big.png", size=(40, 20))
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")

    with pytest.warns(SkippedFileWarning, match="broken.jpg"):
        details = load_dataset_details(f"folder:{tmp_path / 'tree'}", image_size=8)
    stats = dataset_stats(details)

    assert stats.classes == ["a", "b"] and stats.image_shape == (3, 8, 8)
    assert stats.splits["train"].class_counts == {"a": 4, "b": 3}
    assert stats.splits["test"].class_counts == {"a": 1, "b": 2}
    assert stats.splits["train"].width == {"min": 12, "median": 12.0, "max": 40}
    assert stats.splits["train"].height == {"min": 10, "median": 10.0, "max": 20}
    assert stats.splits["test"].mean == channel_mean_std(details.splits.test.images)[0]
    assert [Path(skipped.path).name for skipped in stats.skipped_files] == ["broken.jpg"]
    round_trip = json.loads(json.dumps(stats.to_dict()))
    assert round_trip["skipped_files"][0]["reason"]
    assert round_trip["splits"]["train"]["images"] == 7


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    write_class_tree(tmp_path / "tree", {"a": 3, "b": 5})
    details = load_dataset_details(f"folder:{tmp_path / 'tree'}")
    written = plot_stats(details, tmp_path / "plots")

    assert [path.name for path in written] == ["class_balance.png", "image_sizes.png"]
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 300
