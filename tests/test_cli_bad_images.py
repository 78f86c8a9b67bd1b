"""A PNG whose header claims 100,000x100,000 pixels, in a folder of good images: `train`, `data
stats` and `predict` each say in one line that they skipped that file, and go on with the others
(`explain` and `features`: tests/explain/test_explain_cli.py; `serve`: tests/deploy)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnlab.cli import app

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))
from imagetrees import png_header_claiming  # noqa: E402


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bomb") / "tree"
    for label, shade in (("dark", 40), ("light", 200)):
        (root / label).mkdir(parents=True)
        for index in range(3):
            Image.new("L", (28, 28), shade + index).save(root / label / f"{index}.png")
    (root / "light" / "bomb.png").write_bytes(png_header_claiming(100_000, 100_000))
    return root


def _skip_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "bomb.png" in line]


def test_train_skips_the_file_in_one_line_then_predict_does_too(tree: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "-m", "lenet5_modern", "-d", f"folder:{tree}", "--channels", "1", "-e", "1"]
    trained = CliRunner().invoke(app, [*args, "--val-fraction", "0.34", "-o", str(run)])
    assert trained.exit_code == 0, trained.output
    (line,) = _skip_lines(trained.output)
    assert line.startswith("warning: skipping ") and "image too large to decode safely" in line
    assert "Traceback" not in trained.output

    predicted = CliRunner().invoke(app, ["predict", str(run), str(tree), "--json"])
    assert predicted.exit_code == 0, predicted.output
    rows = {Path(row["path"]).name: row for row in json.loads(predicted.stdout)}
    assert len(rows) == 4 and "too large" in rows["bomb.png"]["error"]
    assert all("top" in row for name, row in rows.items() if name != "bomb.png")

    shown = CliRunner().invoke(app, ["predict", str(run), str(tree)])
    assert shown.exit_code == 0, shown.output
    (line,) = _skip_lines(shown.stderr)
    assert line.startswith("skipped: ") and "image too large" in line


def test_data_stats_lists_the_file_as_skipped(tree: Path) -> None:
    result = CliRunner().invoke(app, ["data", "stats", f"folder:{tree}", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (skipped,) = report["skipped_files"]
    assert skipped["path"].endswith("bomb.png") and "too large" in skipped["reason"]
    images = sum(split["images"] for split in report["splits"].values())
    assert images == 6
