"""`cnnlab predict` on image files: the table and the CSV file, for checkpoints and ONNX files.

The networks are untrained LeNet-5s on random 28x28 images: what is checked is the shape of
the output (columns, rows, ids, probabilities that match `--json`), never a class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.engine.checkpoint import save_checkpoint
from cnnlab.models import create_model


def make_checkpoint(path: Path, classes: list[str]) -> Path:
    model = create_model("lenet5_modern", num_classes=len(classes))
    state = {
        "model_name": model.model_name,
        "model_options": model.model_options,
        "model_state": model.state_dict(),
        "classes": classes,
        "mean": [0.5],
        "std": [0.25],
        "image_shape": [1, 28, 28],
    }
    save_checkpoint(path, state)
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200"})


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    generator = np.random.default_rng(0)
    for number in (7, 12, 1003):
        pixels = generator.integers(0, 256, (30, 30), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{number}.png")
    return folder


def table_columns(output: str) -> tuple[list[str], list[int]]:
    """The header's labels and the number of cells of each body row of a rich table."""
    lines = output.splitlines()
    header = next(line for line in lines if "File" in line)
    labels = [cell.strip() for cell in header.strip("┃ ").split("┃")]
    rows = [line.strip("│ ").count("│") + 1 for line in lines if line.startswith("│")]
    return labels, rows


@pytest.mark.parametrize(
    ("classes", "k", "expected"),
    [
        (["cat", "dog"], 5, ["File", "#1", "#2"]),
        (["ant", "bee", "wasp"], 9, ["File", "#1", "#2", "#3"]),
        (["ant", "bee", "wasp"], 2, ["File", "#1", "#2"]),
    ],
)
def test_every_table_column_is_labelled(
    runner: CliRunner, tmp_path: Path, images: Path, classes: list[str], k: int, expected: list
) -> None:
    checkpoint = make_checkpoint(tmp_path / "best.pt", classes)
    shown = runner.invoke(app, ["predict", str(checkpoint), str(images), "-k", str(k)])
    assert shown.exit_code == 0, shown.output
    labels, rows = table_columns(shown.stdout)
    assert labels == expected
    assert rows == [len(expected)] * 3
    assert f"Top-{len(expected) - 1} predictions" in shown.stdout
