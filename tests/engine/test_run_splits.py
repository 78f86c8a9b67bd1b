"""A run's test split, recorded and reused: `eval` scores exactly the images the run held out,
`--test-data` and `--val-fraction 0` train on every training image, and the banner says so.

Every image is one grey level that no other image has, so a set of decoded images names the
set of files it came from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from synthetic import tiny_cnn  # noqa: F401  (registers the test network)
from typer.testing import CliRunner

from cnnlab import evaluate_checkpoint
from cnnlab.cli import app
from cnnlab.data import load_dataset
from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.trainer import train
from cnnlab.studies.shared_data import open_data, prepare_data

CLASSES = ("dark", "light")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))


def write_images(folder: Path, first: int, count: int, *, prefix: bool = False) -> Path:
    """`count` 12x12 grey images per class, grey levels `first`, `first + 1`, ... (one each);
    in class folders, or named `<class>.<i>.png` with `prefix`."""
    level = first
    for label, name in enumerate(CLASSES):
        for index in range(count):
            pixels = torch.full((12, 12), level, dtype=torch.uint8)
            pixels[: 3 * (label + 1)] //= 2  # the classes differ in how much is dark
            path = folder / (f"{name}.{index}.png" if prefix else f"{name}/{index}.png")
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.numpy(), mode="L").save(path)
            level += 1
    return folder


def levels(images: torch.Tensor) -> set[int]:
    """The grey levels naming the files of `images` (their bottom-right pixels)."""
    return set(images[:, 0, -1, -1].tolist())


def config(data: str, out: Path, **changes: object) -> TrainConfig:
    values = {
        "model": "tiny_cnn",
        "data": data,
        "channels": 1,
        "image_size": 12,
        "epochs": 1,
        "batch_size": 16,
        "device": "cpu",
        "out": str(out),
    }
    return TrainConfig.from_dict({**values, **changes})


def test_eval_of_a_study_run_scores_exactly_the_held_out_files(tmp_path: Path) -> None:
    """A study cuts the split with seed 0; its run with seed 1 must be scored on that cut."""
    data = f"folder:{write_images(tmp_path / 'photos', 10, 30)}"
    run_config = config(data, tmp_path / "run", seed=1)
    study_data = open_data(prepare_data(tmp_path / "study", run_config, None))
    held_out = levels(study_data.test.images)
    reseeded = load_dataset(data, channels=1, image_size=12, seed=1).test
    assert levels(reseeded.images) != held_out  # re-cutting with the run's seed would differ

    train(run_config, data=study_data, progress=False)
    scored = evaluate_checkpoint(tmp_path / "run", device="cpu")
    assert scored.split == "test"
    assert levels(scored.images.images) == held_out
    assert len(scored.images) == len(held_out) == 12
    assert not levels(scored.images.images) & levels(study_data.train.images)


@pytest.mark.parametrize("spelling", ["slash", "relative", "dot", "symlink", "absolute"])
def test_eval_on_the_runs_own_folder_spelled_otherwise_scores_the_test_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    root = write_images(tmp_path / "photos", 10, 10)
    train(config(f"folder:{root}", tmp_path / "run"), progress=False)
    held_out = load_dataset(f"folder:{root}", channels=1, image_size=12, seed=0).test
    (tmp_path / "link").symlink_to(root, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    spec = {
        "slash": f"folder:{root}/",
        "relative": "folder:photos",
        "dot": "folder:./photos",
        "symlink": f"folder:{tmp_path / 'link'}",
        "absolute": f"folder:{root}",
    }[spelling]
    scored = evaluate_checkpoint(tmp_path / "run", data=spec, device="cpu")
    assert scored.split == "test"
    assert levels(scored.images.images) == levels(held_out.images)
    assert len(scored.images) == 4


def test_eval_refuses_a_held_out_split_the_files_no_longer_give(tmp_path: Path) -> None:
    root = write_images(tmp_path / "photos", 10, 10)
    train(config(f"folder:{root}", tmp_path / "run"), progress=False)
    Image.new("L", (12, 12), 200).save(root / "dark" / "added.png")  # the cut now falls otherwise
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code == 2
    assert (
        "no longer gives the images the run held out (20% of the training images, seed 0)"
        in result.stderr
    )


def test_resume_removes_the_stale_evaluation(tmp_path: Path) -> None:
    root = write_images(tmp_path / "photos", 10, 10)
    run = tmp_path / "run"
    train(config(f"folder:{root}", run), progress=False)
    evaluated = CliRunner().invoke(app, ["eval", str(run), "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    assert (run / "eval.json").is_file() and (run / "confusion.png").is_file()
    train(config(f"folder:{root}", run, epochs=2), resume=run, progress=False)
    assert not (run / "eval.json").exists() and not (run / "confusion.png").exists()
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_test_data_trains_on_every_image_and_eval_scores_the_test_data(tmp_path: Path) -> None:
    kaggle = write_images(tmp_path / "kaggle", 10, 10, prefix=True)
    photos = write_images(tmp_path / "photos", 100, 3)
    run = tmp_path / "run"
    arguments = ["train", "-m", "tiny_cnn", "-d", f"dogs-vs-cats:{kaggle}", "-e", "1"]
    arguments += ["--test-data", f"folder:{photos}", "--channels", "1", "--image-size", "12"]
    result = CliRunner().invoke(app, [*arguments, "-b", "16", "--device", "cpu", "-o", str(run)])
    assert result.exit_code == 0, result.output
    assert "20 train" in result.output
    assert f"test split: folder:{photos}, all of it (6 images); nothing held out" in result.output
    state = load_checkpoint(run / "best.pt")
    assert state["split"]["source"] == "test_data"

    scored = evaluate_checkpoint(run, device="cpu")
    assert levels(scored.images.images) == set(range(100, 106))
    report = CliRunner().invoke(app, ["eval", str(run), "--device", "cpu", "--json"])
    assert json.loads(report.stdout)["count"] == 6
    train_split = evaluate_checkpoint(run, split="train", device="cpu")
    assert levels(train_split.images.images) == set(range(10, 30))


def test_the_banner_says_what_was_held_out_and_why(tmp_path: Path) -> None:
    root = write_images(tmp_path / "photos", 10, 10)
    arguments = ["train", "-m", "tiny_cnn", "-d", f"folder:{root}", "-e", "1", "--channels", "1"]
    result = CliRunner().invoke(app, [*arguments, "--device", "cpu", "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "held out 20% of train (seed 0, 4 images) as the test split: the data has no test" in (
        result.output
    )


def test_val_fraction_zero_keeps_the_last_epoch_as_best(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_images(root / "Train", 10, 10)
    write_images(root / "Test", 50, 3)
    run = tmp_path / "run"
    result = train(config(f"folder:{root}", run, epochs=3, val_fraction=0, lr=0.5), progress=False)
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert best["epoch"] == last["epoch"] == 3
    assert result.best_metric == result.history[-1]["test_acc"]
    assert all(torch.equal(best["model_state"][k], v) for k, v in last["model_state"].items())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--val-fraction", "0"], "has no test split and val_fraction 0 holds nothing out"),
        (["--test-data", "OTHER"], "has classes ['zebra'] that the training data"),
    ],
)
def test_bad_split_options_are_one_line(tmp_path: Path, options: list[str], message: str) -> None:
    root = write_images(tmp_path / "photos", 10, 3)
    other = tmp_path / "other"
    write_images(other, 50, 1)
    os.rename(other / "light", other / "zebra")
    options = [f"folder:{other}" if value == "OTHER" else value for value in options]
    arguments = ["train", "-m", "tiny_cnn", "-d", f"folder:{root}", "--channels", "1", *options]
    result = CliRunner().invoke(app, [*arguments, "--device", "cpu", "-o", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr
