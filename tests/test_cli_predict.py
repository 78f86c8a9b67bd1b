"""`cnnlab predict` on image files: the table and the CSV file, for checkpoints and ONNX files.

The networks are untrained LeNet-5s on random 28x28 images: what is checked is the shape of
the output (columns, rows, ids, probabilities that match `--json`), never a class.
"""

from __future__ import annotations

import csv
import json
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


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text().splitlines()))


def json_probabilities(runner: CliRunner, model: Path, images: Path) -> dict[str, dict]:
    """{file stem: {class: probability}} from `predict --json`, every class shown."""
    shown = runner.invoke(app, ["predict", str(model), str(images), "--json", "-k", "100"])
    assert shown.exit_code == 0, shown.output
    return {
        Path(row["path"]).stem: {entry["class"]: entry["probability"] for entry in row["top"]}
        for row in json.loads(shown.stdout)
    }


@pytest.fixture(scope="module")
def dogs_vs_cats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("run") / "best.pt", ["cat", "dog"])


def test_csv_default_columns_hold_every_class(
    runner: CliRunner, dogs_vs_cats: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "predictions.csv"
    written = runner.invoke(app, ["predict", str(dogs_vs_cats), str(images), "--csv", str(out)])
    assert written.exit_code == 0, written.output
    assert "wrote 3 rows" in written.stdout
    header, *rows = read_csv(out)
    assert header == ["id", "class", "cat", "dog"]
    expected = json_probabilities(runner, dogs_vs_cats, images)
    assert [row[0] for row in rows] == ["1003", "12", "7"]  # the folder's sorted order
    for identifier, predicted, cat, dog in rows:
        probabilities = expected[identifier]
        assert predicted == max(probabilities, key=probabilities.get)
        assert float(cat) == pytest.approx(probabilities["cat"], rel=1e-5)
        assert float(dog) == pytest.approx(probabilities["dog"], rel=1e-5)


def test_kaggle_submission_from_a_checkpoint_and_its_onnx_export(
    runner: CliRunner, dogs_vs_cats: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "test1"
    folder.mkdir()
    for number in (4, 15):
        Image.fromarray(np.full((30, 30), number * 10, np.uint8)).save(folder / f"{number}.jpg")
    onnx_file = tmp_path / "model.onnx"
    assert runner.invoke(app, ["export", str(dogs_vs_cats), "--out", str(onnx_file)]).exit_code == 0
    expected = json_probabilities(runner, dogs_vs_cats, folder)
    for model in (dogs_vs_cats, onnx_file):
        out = tmp_path / f"{model.suffix[1:]}.csv"
        options = ["--csv", str(out), "--id-pattern", r"(\d+)", "--columns", "id,label=dog"]
        written = runner.invoke(app, ["predict", str(model), str(folder), *options])
        assert written.exit_code == 0, written.output
        header, *rows = read_csv(out)
        assert header == ["id", "label"]
        assert {row[0] for row in rows} == {"4", "15"}
        for identifier, label in rows:
            assert float(label) == pytest.approx(expected[identifier]["dog"], abs=1e-5)


def test_files_without_an_id_or_unreadable_are_reported_and_skipped(
    runner: CliRunner, dogs_vs_cats: Path, images: Path, tmp_path: Path
) -> None:
    (images / "cover.png").write_bytes((images / "7.png").read_bytes())
    (images / "99.jpg").write_text("not an image")
    out = tmp_path / "ids.csv"
    options = ["--csv", str(out), "--id-pattern", r"^(\d+)\."]
    written = runner.invoke(app, ["predict", str(dogs_vs_cats), str(images), *options])
    assert written.exit_code == 0, written.output
    assert [row[0] for row in read_csv(out)[1:]] == ["1003", "12", "7"]
    skipped = written.stderr.strip().splitlines()
    assert len(skipped) == 2
    assert (
        "99.jpg" in skipped[0] and "cover.png: --id-pattern '^(\\d+)\\.' finds no id" in skipped[1]
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--id-pattern", r"\d+"], "has 0 groups; it needs exactly one"),
        (["--id-pattern", r"(\d+)_(\d+)"], "has 2 groups"),
        (["--id-pattern", "(unclosed"], "is not a valid regex"),
        (["--columns", "id,label=wolf"], "unknown column 'wolf'; choose from: id, path, class"),
        (["--columns", "id,,dog"], "empty column"),
        (["--columns", "dog,dog"], "names 'dog' twice"),
    ],
)
def test_bad_patterns_and_columns_are_one_line(
    runner: CliRunner, dogs_vs_cats: Path, images: Path, tmp_path: Path, options, message
) -> None:
    out = tmp_path / "refused.csv"
    refused = runner.invoke(
        app, ["predict", str(dogs_vs_cats), str(images), "--csv", str(out), *options]
    )
    assert refused.exit_code == 2
    assert message in refused.stderr and refused.stderr.count("\n") == 1
    assert not out.exists()


def test_csv_options_need_csv(runner: CliRunner, dogs_vs_cats: Path, images: Path) -> None:
    refused = runner.invoke(app, ["predict", str(dogs_vs_cats), str(images), "--columns", "id"])
    assert refused.exit_code == 2 and "add --csv PATH" in refused.stderr
