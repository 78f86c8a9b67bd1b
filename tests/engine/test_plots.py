"""Training curves and confusion matrices: valid image files, written atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from cnnlab.engine.plots import plot_confusion, plot_curves
from cnnlab.errors import DataError


def history(epochs: int) -> list[dict]:
    return [
        {
            "epoch": epoch,
            "train_loss": 2.3 * math.exp(-epoch / 3),
            "test_loss": 2.3 * math.exp(-epoch / 3) + 0.05,
            "train_acc": 1 - 0.9 * math.exp(-epoch / 2),
            "test_acc": 0.97 - 0.9 * math.exp(-epoch / 2),
            "status": "completed",
        }
        for epoch in range(1, epochs + 1)
    ]


def assert_valid_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    assert min(pixels.shape[:2]) > 200
    assert pixels.std() > 10, "the figure is not blank"
    return pixels


def test_plot_curves_writes_a_png_and_no_temp_files(tmp_path: Path) -> None:
    path = plot_curves(history(8), tmp_path / "curves.png", title="tiny run")
    assert path == tmp_path / "curves.png"
    assert_valid_png(path)
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_plot_curves_marks_a_diverged_epoch(tmp_path: Path) -> None:
    rows = history(4)
    rows.append({"epoch": 5, "train_loss": math.nan, "train_acc": 0.1, "status": "diverged"})
    plain = assert_valid_png(
        plot_curves(rows[:4] + [{**rows[4], "status": "completed"}], tmp_path / "a.png")
    )
    marked = assert_valid_png(plot_curves(rows, tmp_path / "b.png"))
    red = np.array([0xD6, 0x27, 0x28])

    def red_pixels(pixels: np.ndarray) -> int:
        return int((np.abs(pixels.astype(int) - red).sum(axis=2) < 40).sum())

    assert red_pixels(marked) > red_pixels(plain) + 100


def test_plot_curves_accepts_a_single_epoch_with_missing_metrics(tmp_path: Path) -> None:
    assert_valid_png(plot_curves([{"train_loss": 1.5, "train_acc": 0.4}], tmp_path / "one.png"))


def test_plot_curves_refuses_an_empty_history(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty"):
        plot_curves([], tmp_path / "curves.png")


def test_plot_curves_follows_the_suffix(tmp_path: Path) -> None:
    path = plot_curves(history(3), tmp_path / "curves.svg")
    assert path.read_text().lstrip().startswith("<?xml")


def test_failed_plot_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "curves.xyz"
    path.write_bytes(b"previous")
    with pytest.raises(ValueError, match="xyz"):
        plot_curves(history(3), path)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.xyz"]


@pytest.mark.parametrize("num_classes", [2, 10, 60])
def test_plot_confusion_writes_a_png(tmp_path: Path, num_classes: int) -> None:
    matrix = torch.diag(torch.randint(20, 40, (num_classes,)))
    matrix += torch.randint(0, 4, (num_classes, num_classes))
    classes = [f"class {index}" for index in range(num_classes)]
    assert_valid_png(plot_confusion(matrix, classes, tmp_path / "confusion.png"))


def test_plot_confusion_colours_rows_by_share_not_by_count(tmp_path: Path) -> None:
    # A rare class predicted perfectly must look as dark as a common one: both diagonal cells
    # take the colour map's full-scale colour.
    matrix = [[1000, 0], [0, 3]]
    pixels = assert_valid_png(plot_confusion(matrix, ["common", "rare"], tmp_path / "c.png"))
    full_scale = np.array(colormaps["Blues"](1.0)[:3]) * 255
    heat_map = pixels[:, : pixels.shape[1] * 3 // 4]  # leave out the colour bar
    ys, xs = np.nonzero(np.abs(heat_map.astype(float) - full_scale).sum(axis=2) < 12)
    middle_y, middle_x = heat_map.shape[0] / 2, heat_map.shape[1] / 2
    top_left = ((ys < middle_y) & (xs < middle_x)).sum()
    bottom_right = ((ys > middle_y) & (xs > middle_x)).sum()
    assert top_left > 1000 and bottom_right > 1000


def test_plot_confusion_refuses_a_matrix_of_the_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="must be 3x3"):
        plot_confusion(torch.zeros(2, 2), ["a", "b", "c"], tmp_path / "c.png")
