"""`cnnlab eval` and `cnnlab predict` end to end, on a tiny image tree and a hand-set network.

The network calls an image "light" when its mean brightness is above mid-grey, so every
expected accuracy and confusion count follows from how the images were drawn.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.engine.checkpoint import save_checkpoint
from cnnlab.models import create_model, register_model
from cnnlab.models.registry import in_channels_option, num_classes_option

CLASSES = ["dark", "light"]
DARK, LIGHT = 40, 210
# Test images per folder: the dark folder holds one light image, which the net must miss.
TEST_TREE = {"dark": [DARK, DARK, LIGHT], "light": [LIGHT, LIGHT, LIGHT]}


@register_model(
    input_size=(1, 8, 8),
    paper="test fixture",
    options={"num_classes": num_classes_option(2), "in_channels": in_channels_option(1)},
)
def brightness_test_net(**options) -> nn.Module:
    """Global average pooling and a linear layer: a brightness threshold once its weights are set."""
    linear = nn.Linear(options["in_channels"], options["num_classes"])
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    return CliRunner(env={"COLUMNS": "160"})


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A run folder whose best.pt holds the brightness net (normalized mid-grey maps to 0)."""
    model = create_model("brightness_test_net")
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[-1.0], [1.0]]))
        model[2].bias.zero_()
    path = tmp_path / "run" / "best.pt"
    save_checkpoint(
        path,
        {
            "model_name": model.model_name,
            "model_options": model.model_options,
            "model_state": model.state_dict(),
            "classes": CLASSES,
            "mean": [0.5],
            "std": [0.25],
            "image_shape": [1, 8, 8],
            "epoch": 3,
        },
    )
    return path


def write_png(path: Path, brightness: int, seed: int) -> Path:
    noise = np.random.default_rng(seed).integers(-20, 21, size=(8, 8))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((brightness + noise).astype(np.uint8), mode="L").save(path)
    return path


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    root = tmp_path / "shapes"
    for name, brightness in (("dark", DARK), ("light", LIGHT)):
        for index in range(4):
            write_png(root / "train" / name / f"{index}.png", brightness, seed=index)
    for name, brightnesses in TEST_TREE.items():
        for index, brightness in enumerate(brightnesses):
            write_png(root / "test" / name / f"{index}.png", brightness, seed=10 + index)
    return root


def test_eval_prints_and_writes_the_scores(
    runner: CliRunner, checkpoint: Path, image_tree: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "eval",
            str(checkpoint),
            "--data",
            f"folder:{image_tree}",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
    )

    assert result.exit_code == 0, result.output
    assert "83.33%" in result.stdout  # 5 of 6 test images
    assert "Per-class accuracy" in result.stdout and "66.67%" in result.stdout
    assert str(out / "confusion.png") in result.stdout.replace("\n", "")
    report = json.loads((out / "eval.json").read_text())
    assert (report["model"], report["epoch"], report["device"]) == ("brightness_test_net", 3, "cpu")
    assert report["top1"] == pytest.approx(5 / 6)
    assert report["top5"] == 1.0
    assert report["confusion"] == [[2, 1], [0, 3]]
    assert report["per_class_accuracy"] == {"dark": pytest.approx(2 / 3), "light": 1.0}
    with Image.open(out / "confusion.png") as image:
        assert image.format == "PNG"


def test_eval_json_goes_beside_the_checkpoint_by_default(
    runner: CliRunner, checkpoint: Path, image_tree: Path
) -> None:
    run_folder = checkpoint.parent
    result = runner.invoke(
        app, ["eval", str(run_folder), "--data", f"folder:{image_tree}", "--json"]
    )

    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["count"] == 6 and printed["checkpoint"] == str(checkpoint)
    assert json.loads((run_folder / "eval.json").read_text()) == printed
    assert (run_folder / "confusion.png").is_file()


def test_eval_flip_scores_mirror_images_too(
    runner: CliRunner, checkpoint: Path, image_tree: Path
) -> None:
    """The brightness net cannot tell an image from its mirror: flips change no score."""
    reports = []
    for flag in ("--no-flip", "--flip"):
        args = ["eval", str(checkpoint), "--data", f"folder:{image_tree}", "--json", flag]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        reports.append(json.loads(result.stdout))
    assert [report["test_time_flip"] for report in reports] == [False, True]
    assert reports[1]["loss"] == pytest.approx(reports[0]["loss"], rel=1e-6)
    assert reports[1]["confusion"] == reports[0]["confusion"] == [[2, 1], [0, 3]]


def test_eval_refuses_data_with_other_classes(
    runner: CliRunner, checkpoint: Path, image_tree: Path
) -> None:
    (image_tree / "train" / "dark").rename(image_tree / "train" / "black")
    (image_tree / "test" / "dark").rename(image_tree / "test" / "black")
    result = runner.invoke(app, ["eval", str(checkpoint), "--data", f"folder:{image_tree}"])

    assert result.exit_code == 2
    assert "class 0 is 'dark' in the checkpoint but 'black'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_eval_missing_checkpoint_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path / "nope.pt"), "--data", "mnist"])

    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nope.pt'}: no such checkpoint; pass a .pt file or a run folder"
    ]


@pytest.fixture
def mixed_files(tmp_path: Path) -> list[Path]:
    good = write_png(tmp_path / "in" / "bright.png", LIGHT, seed=0)
    broken = tmp_path / "in" / "broken.jpg"
    Image.new("RGB", (32, 32), "white").save(broken, quality=90)
    broken.write_bytes(broken.read_bytes()[:200])
    text = tmp_path / "in" / "readme.txt"
    text.write_text("not an image")
    return [good, broken, text]


def test_predict_shows_good_files_and_reports_bad_ones(
    runner: CliRunner, checkpoint: Path, mixed_files: list[Path]
) -> None:
    result = runner.invoke(app, ["predict", str(checkpoint), *map(str, mixed_files), "-k", "1"])

    assert result.exit_code == 0, result.output
    assert "bright.png" in result.stdout and "light" in result.stdout
    assert "broken.jpg" not in result.stdout
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2
    assert "broken.jpg" in errors[0] and "readme.txt" in errors[1]


def test_predict_json_keeps_every_file(
    runner: CliRunner, checkpoint: Path, mixed_files: list[Path]
) -> None:
    result = runner.invoke(app, ["predict", str(checkpoint), *map(str, mixed_files), "--json"])

    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["path"] for row in rows] == list(map(str, mixed_files))
    top = rows[0]["top"]
    assert [entry["class"] for entry in top] == ["light", "dark"]  # top-5 capped at 2 classes
    assert sum(entry["probability"] for entry in top) == pytest.approx(1.0)
    assert "error" in rows[1] and "error" in rows[2]


def test_predict_fails_when_no_file_is_readable(
    runner: CliRunner, checkpoint: Path, mixed_files: list[Path]
) -> None:
    result = runner.invoke(app, ["predict", str(checkpoint), *map(str, mixed_files[1:])])

    assert result.exit_code == 2
    assert "none of the 2 file(s) could be classified" in result.stderr


def test_eval_defaults_to_the_training_data_and_split(tmp_path: Path) -> None:
    from cnnlab.engine.config import TrainConfig
    from cnnlab.engine.trainer import train

    run = tmp_path / "run"
    config = TrainConfig(data="mnist-5k", epochs=1, seed=3, out=str(run))
    trained = train(config, progress=False)
    result = CliRunner().invoke(app, ["eval", str(run), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["data"] == "mnist-5k"
    assert report["top1"] == pytest.approx(trained.final["test_acc"], abs=1e-6)


def _eval_report(runner: CliRunner, checkpoint: Path, data: str, out: Path, *options: str):
    arguments = ["eval", str(checkpoint), "--data", data, "--out", str(out), "--device", "cpu"]
    result = runner.invoke(app, [*arguments, *options])
    assert result.exit_code == 0, result.output
    return result, json.loads((out / "eval.json").read_text())


def test_eval_on_other_data_without_a_test_split_scores_every_image(
    runner: CliRunner, checkpoint: Path, tmp_path: Path
) -> None:
    """A flat class-per-folder tree is not re-split: all 7 images count, not a 20% slice."""
    folder = tmp_path / "photos"
    for index in range(4):
        write_png(folder / "dark" / f"{index}.png", DARK, seed=index)
    for index in range(3):
        write_png(folder / "light" / f"{index}.png", LIGHT, seed=20 + index)
    result, report = _eval_report(runner, checkpoint, f"folder:{folder}", tmp_path / "r")
    assert (report["split"], report["count"]) == ("all", 7)
    assert report["top1"] == 1.0
    assert "(all splits, 7 images)" in result.stdout


def test_eval_split_chooses_test_train_or_all(
    runner: CliRunner, checkpoint: Path, image_tree: Path, tmp_path: Path
) -> None:
    data = f"folder:{image_tree}"  # its own test/ sub-tree: 6 test, 8 train images
    counts = {}
    for split in ("test", "train", "all"):
        result, report = _eval_report(runner, checkpoint, data, tmp_path / split, "--split", split)
        assert report["split"] == split
        counts[split] = report["count"]
    assert counts == {"test": 6, "train": 8, "all": 14}
    _, default = _eval_report(runner, checkpoint, data, tmp_path / "default")
    assert (default["split"], default["count"]) == ("test", 6)
    refused = runner.invoke(app, ["eval", str(checkpoint), "--data", data, "--split", "val"])
    assert refused.exit_code == 2 and "unknown split 'val'" in refused.stderr


def test_two_classes_show_no_top_k_and_row_labels_keep_one_index(
    runner: CliRunner, checkpoint: Path, image_tree: Path, tmp_path: Path
) -> None:
    from cnnlab.cli.eval_cmd import _row_label

    result, report = _eval_report(runner, checkpoint, f"folder:{image_tree}", tmp_path / "r")
    assert "Top-1 accuracy" in result.stdout
    assert "Top-2" not in result.stdout and "Top-5" not in result.stdout
    assert report["top_k"] is None
    assert "0 dark" in result.stdout
    assert _row_label(0, "0 - zero") == "0 - zero"  # MNIST's class names carry the digit
    assert _row_label(3, "cat") == "3 cat"
