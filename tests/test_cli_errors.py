"""The README's promise for every command in `cnnlab --help`: a mistake a user can make is one
red line on stderr and exit code 2, never a traceback or a usage box."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from cnnlab.cli import app


def _leaf_commands(command=None, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's path, its module loaded (the top-level group loads them on demand)."""
    command = command or typer.main.get_command(app)
    if not hasattr(command, "list_commands"):
        return [path]
    context = typer.Context(command)
    return [
        leaf
        for name in command.list_commands(context)
        for leaf in _leaf_commands(command.get_command(context, name), (*path, name))
    ]


COMMANDS = _leaf_commands()


def _assert_one_line_error(result) -> None:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image tree, a file, and a run trained on the tree (`run/`)."""
    root = tmp_path_factory.mktemp("cli-errors")
    for split, count in (("train", 6), ("test", 2)):
        for label, shade in (("dark", 30), ("light", 220)):
            folder = root / "tree" / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                Image.new("L", (28, 28), shade + index).save(folder / f"{index}.png")
    (root / "file").write_text("not a folder")
    args = ["train", "-m", "lenet5_modern", "-d", f"folder:{root / 'tree'}", "--channels", "1"]
    result = CliRunner().invoke(app, [*args, "-e", "1", "-b", "4", "-o", str(root / "run"), "-q"])
    assert result.exit_code == 0, result.output
    return root


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_unknown_option_is_one_line_for_every_command(command: tuple[str, ...]) -> None:
    _assert_one_line_error(CliRunner().invoke(app, [*command, "--no-such-option"]))


def _bad_inputs(root: Path) -> dict[str, list[list[str]]]:
    tree, run, file = f"folder:{root / 'tree'}", str(root / "run"), str(root / "file")
    train = ["train", "-m", "lenet5_modern", "-d", tree, "--channels", "1", "-e", "1", "-q"]
    return {
        "models": [["models", "no-such-family"]],
        "summary": [["summary", "no_such_model"], ["summary", "lenet5", "--input", "3x0"]],
        "data stats": [
            ["data", "stats", "folder:/no/such/folder"],
            ["data", "stats", tree, "--out", "/proc/cnnlab"],
            ["data", "stats", tree, "--out", file],
        ],
        "train": [
            [*train, "--out", "/proc/cnnlab"],
            [*train, "--out", file],
            [*train, "--out", run],  # holds a run
            [*train, "--model-opt", "num_classes=3", "-o", str(root / "t1")],
            [*train, "--momentum", "2", "-o", str(root / "t2")],
            [*train, "--warmup-epochs", "3", "-o", str(root / "t3")],
            ["train", "--resume", run, "--lr", "0.5", "-e", "2"],
            ["train", "--resume", run, "--optimizer", "adam", "-e", "2"],
            ["train", "--resume", run, "--force", "-e", "2"],
        ],
        "eval": [
            ["eval", str(root / "no-run")],
            ["eval", run, "--out", "/proc/cnnlab"],
            ["eval", run, "--out", file],
        ],
        "predict": [["predict", str(root / "no-run"), file], ["predict", run, file, "-k", "0"]],
        "export": [["export", str(root / "no-run")], ["export", run, "-o", f"{file}/m.onnx"]],
        "serve": [["serve", str(root / "no-run")]],
        "features": [["features", run, "--filters", "-o", "/proc/cnnlab"]],
        "study status": [["study", "status", str(root / "no-study")]],
        "study run": [["study", "run", file, "-o", str(root / "study")]],
    }


def test_every_command_has_bad_inputs_listed(workspace: Path) -> None:
    listed = set(_bad_inputs(workspace))
    assert listed <= {" ".join(command) for command in COMMANDS}


@pytest.mark.parametrize(
    "command",
    ["models", "summary", "data stats", "train", "eval", "predict"]
    + ["export", "serve", "features", "study status", "study run"],
)
def test_bad_input_is_one_line_and_exit_2(workspace: Path, command: str) -> None:
    for args in _bad_inputs(workspace)[command]:
        _assert_one_line_error(CliRunner().invoke(app, args))


def test_an_unwritable_cache_is_one_line(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", "/proc/cnnlab-cache")
    args = ["data", "stats", f"folder:{workspace / 'tree'}", "--image-size", "20"]
    _assert_one_line_error(CliRunner().invoke(app, args))


def test_skipped_files_warn_one_line_each_and_quiet_hides_them(
    workspace: Path, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    for label in ("dark", "light"):
        (tree / label).mkdir(parents=True)
        for index in range(4):
            Image.new("L", (28, 28), 40 if label == "dark" else 200).save(
                tree / label / f"{index}.png"
            )
    (tree / "dark" / "notes.txt").write_text("")
    (tree / "light" / "broken.png").write_bytes(b"not a png")
    args = ["train", "-m", "lenet5_modern", "-d", f"folder:{tree}", "--channels", "1", "-e", "1"]
    loud = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "a"), "--val-fraction", "0.25"])
    assert loud.exit_code == 0, loud.output
    warned = [line for line in loud.output.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 2 and "notes.txt" in warned[0] and "broken.png" in warned[1]
    assert "warnings.warn" not in loud.output and "Warning" not in loud.output
    quiet = CliRunner().invoke(
        app, [*args, "-o", str(tmp_path / "b"), "--val-fraction", "0.25", "-q"]
    )
    assert quiet.exit_code == 0 and quiet.output == "", quiet.output
