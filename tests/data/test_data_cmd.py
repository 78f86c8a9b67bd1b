"""`cnnlab data stats` through typer's test runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from imagetrees import write_class_tree
from typer.testing import CliRunner

from cnnlab.cli import app

pytestmark = pytest.mark.usefixtures("cache_dir")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    write_class_tree(tmp_path / "tree" / "train", {"cat": 4, "dog": 3})
    write_class_tree(tmp_path / "tree" / "val", {"cat": 2, "dog": 2})
    (tmp_path / "tree" / "train" / "dog" / "readme.txt").write_text("not an image")
    return tmp_path / "tree"


def test_json_report(tree: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["data", "stats", f"folder:{tree}", "--json", "--out", str(tmp_path / "plots")]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)

    assert set(report) == {"dataset", "classes", "image_shape", "splits", "skipped_files", "plots"}
    assert report["splits"]["train"]["class_counts"] == {"cat": 4, "dog": 3}
    assert report["splits"]["test"]["images"] == 4
    split_keys = {"images", "class_counts", "mean", "std", "height", "width"}
    assert set(report["splits"]["train"]) == split_keys
    assert len(report["splits"]["train"]["mean"]) == 3
    assert report["skipped_files"][0]["path"].endswith("readme.txt")
    assert all(Path(path).is_file() for path in report["plots"])


def test_tables_for_humans(tree: Path) -> None:
    result = CliRunner().invoke(app, ["data", "stats", f"folder:{tree}", "--image-size", "8"])
    assert result.exit_code == 0, result.output
    for text in ("loaded as 3x8x8", "Class balance", "Original image sizes", "readme.txt"):
        assert text in result.stdout


def test_bad_spec_is_one_line_and_exit_code_2() -> None:
    result = CliRunner().invoke(app, ["data", "stats", "nosuchset"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown dataset 'nosuchset'" in result.stderr
