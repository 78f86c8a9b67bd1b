"""`cnnlab compare` on a tiny image folder: recipes, the store, the table, plots and the page."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.compare import CompareSpec, ResultStore, run_compare, summarize_results
from cnnlab.compare.recipes import model_options_for, recipe
from cnnlab.compare.report import markdown_table
from cnnlab.engine.config import TrainConfig
from cnnlab.errors import OptionError, UnknownNameError

runner = CliRunner()
MODELS = ["lenet5_modern", "lenet5"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of 28x28 grey images (a bright band at a class-specific row), 16 each."""
    root = tmp_path_factory.mktemp("shapes")
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 16), ("test", 6)):
        for label in range(3):
            (root / split / f"c{label}").mkdir(parents=True)
            for index in range(count):
                pixels = torch.randint(0, 60, (28, 28), generator=generator)
                pixels[4 + 8 * label : 8 + 8 * label] += 150
                image = Image.fromarray(pixels.clamp(0, 255).to(torch.uint8).numpy(), mode="L")
                image.save(root / split / f"c{label}" / f"{index}.png")
    return root


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_recipes_pick_small_input_variants_and_learning_rates() -> None:
    assert model_options_for("resnet18", (3, 32, 32)) == {"small_input": True}
    assert model_options_for("resnet18", (3, 96, 96)) == {"stem": "cheap"}
    assert model_options_for("resnet18", (3, 224, 224)) == {}
    assert model_options_for("vgg11_bn", (3, 32, 32)) == {}
    base = TrainConfig(epochs=1)
    with_bn = recipe("resnet18", (3, 32, 32), 10, 5000, base)
    without_bn = recipe("vgg11", (3, 32, 32), 10, 5000, base)
    assert (with_bn.lr, without_bn.lr) == (0.1, 0.01)
    assert with_bn.augment == ["flip", "crop:4"] and with_bn.model_options == {"small_input": True}
    assert recipe("lenet5_modern", (1, 28, 28), 10, 100, base).augment == ["crop:3"]


def test_compare_trains_every_model_and_seed_and_writes_the_report(folder: Path, tmp_path: Path):
    out = tmp_path / "cmp"
    result = runner.invoke(
        app,
        ["compare", "-m", ",".join(MODELS), "-d", f"folder:{folder}", "-e", "1"]
        + ["--seeds", "2", "-o", str(out), "-q", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["model"], r["seed"]) for r in records) == sorted(
        (m, s) for m in MODELS for s in (0, 1)
    )
    assert all(r["top5_error"] is None for r in records)  # 3 classes: no top-5
    table = (out / "results.md").read_text()
    assert "Top-5" not in table and all(f"| {m} |" in table for m in MODELS)
    assert " ± " in table  # two seeds give a standard deviation
    with (out / "results.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["model"] for row in rows] == MODELS and rows[0]["seeds"] == "2"
    for plot in ("accuracy_vs_macs.png", "accuracy_vs_time.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "lenet5_modern" in page


def test_finished_runs_are_not_trained_again(folder: Path, tmp_path: Path) -> None:
    spec = CompareSpec(
        models=["lenet5_modern"], data=f"folder:{folder}", epochs=1, out=str(tmp_path), device="cpu"
    )
    first = run_compare(spec, progress=False, on_message=lambda _: None)
    messages: list[str] = []
    second = run_compare(spec, progress=False, on_message=messages.append)
    assert first == second and messages == []
    assert ResultStore(tmp_path / "results.jsonl").get("lenet5_modern", 0) == first[0]


def test_a_model_that_cannot_take_the_images_is_skipped_with_the_reason(
    folder: Path, tmp_path: Path
) -> None:
    spec = CompareSpec(models=["alexnet"], data=f"folder:{folder}", epochs=1, out=str(tmp_path))
    messages: list[str] = []
    assert run_compare(spec, progress=False, on_message=messages.append) == []
    assert messages and "skipping alexnet" in messages[0] and "smallest it accepts" in messages[0]


def test_summary_gives_mean_and_std_per_model() -> None:
    records = [
        {"model": "a", "params": 10, "macs": 100, "images_per_sec": r, "seconds": s}
        | {"top1_error": e, "top5_error": None}
        for r, s, e in ((100.0, 10.0, 0.2), (300.0, 20.0, 0.4))
    ]
    (row,) = summarize_results(records)
    assert row["images_per_sec"] == 200 and row["train_seconds"] == 15
    assert row["top1_error"] == pytest.approx(0.3) and row["top1_error_std"] == pytest.approx(
        0.1414, abs=1e-4
    )
    assert "30.0 ± 14.1" in markdown_table([row])


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ({"epochs": 2, "time_budget": "1m"}, OptionError, "not both"),
        ({"models": ["resnet18", "nope"]}, UnknownNameError, "unknown model 'nope'"),
        ({"seeds": 0}, OptionError, "at least 1"),
        ({"time_budget": "soon"}, OptionError, "not a duration"),
    ],
)
def test_bad_specs_say_what_is_wrong(args: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        CompareSpec(**{"models": ["resnet18"], "data": "mnist-5k", **args})


def test_cli_refuses_epochs_with_a_budget_in_one_line() -> None:
    result = runner.invoke(
        app, ["compare", "-m", "resnet18", "-d", "mnist-5k", "-e", "2", "--time-budget", "1m"]
    )
    assert (
        result.exit_code == 2 and "not both" in result.output and "Traceback" not in result.output
    )
