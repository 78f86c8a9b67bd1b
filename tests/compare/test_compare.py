"""`cnnlab compare` on a tiny image folder: recipes, the study store and its workers, resume,
failed runs, the table, plots and the page."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.compare import CompareSpec, run_compare, summarize_results, write_report
from cnnlab.compare.recipes import model_options_for, recipe
from cnnlab.compare.report import markdown_table, spans_decades
from cnnlab.engine.config import TrainConfig
from cnnlab.errors import OptionError, StudyError, UnknownNameError
from cnnlab.models import register_model
from cnnlab.models.registry import in_channels_option, num_classes_option

pytestmark = pytest.mark.usefixtures("one_thread")

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


def test_recipes_pick_small_input_variants_and_learning_rates() -> None:
    assert model_options_for("resnet18", (3, 32, 32)) == {"small_input": True}
    assert model_options_for("resnet18", (3, 96, 96)) == {"stem": "cheap"}
    assert model_options_for("resnet18", (3, 224, 224)) == {}
    assert model_options_for("vgg11_bn", (3, 32, 32)) == {"small_input": True}
    assert model_options_for("alexnet", (1, 28, 28)) == {"small_input": True}
    assert model_options_for("googlenet", (3, 32, 32)) == {"small_input": True}
    assert model_options_for("vgg11_bn", (3, 64, 64)) == {}
    assert model_options_for("lenet5_modern", (1, 28, 28)) == {}
    base = TrainConfig(epochs=1)
    with_bn = recipe("resnet18", (3, 32, 32), 10, 5000, base)
    without_bn = recipe("vgg11", (3, 32, 32), 10, 5000, base)
    assert (with_bn.lr, without_bn.lr) == (0.1, 0.01)
    assert with_bn.augment == ["flip", "crop:4"] and with_bn.model_options == {"small_input": True}
    assert recipe("lenet5_modern", (1, 28, 28), 10, 100, base).augment == ["crop:3"]
    for name in ("nin", "alexnet", "inception_v3"):  # they take 28 px only in their small form
        small = recipe(name, (1, 28, 28), 10, 100, base)
        assert small.model_options == {"small_input": True}
        assert small.lr == (0.1 if name == "inception_v3" else 0.01)  # batch norm or not


def _spec(folder: Path, out: Path, models: list[str], **changes) -> CompareSpec:
    values = {"data": f"folder:{folder}", "epochs": 1, "out": str(out), "device": "cpu"}
    return CompareSpec(models=models, **values | changes)


def _compare(spec: CompareSpec, messages: list[str] | None = None) -> list[dict]:
    log = (lambda _: None) if messages is None else messages.append
    return run_compare(spec, threads=1, on_message=log)


def _column(out: Path, sql: str) -> list:
    with sqlite3.connect(out / "study.db") as db:
        return [row[0] for row in db.execute(sql)]


@pytest.mark.slow  # two spawned worker processes each import torch
def test_two_workers_train_every_model_and_seed_once_and_write_the_report(
    folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cmp"
    result = runner.invoke(
        app,
        ["compare", "-m", ",".join(MODELS), "-d", f"folder:{folder}", "-e", "1"]
        + ["--seeds", "2", "-o", str(out), "-q", "--device", "cpu", "--workers", "2"],
    )
    assert result.exit_code == 0, result.output
    runs = _column(out, "SELECT point || ' ' || seed || ' ' || status || ' ' || attempts FROM runs")
    assert sorted(runs) == sorted(f"model={m} {s} done 1" for m in MODELS for s in (0, 1))
    assert len(list((out / "data").iterdir())) == 1  # one decoded copy, mapped by both workers
    assert all(
        (out / "runs" / f"model={m}-s{s}" / "last.pt").is_file() for m in MODELS for s in (0, 1)
    )
    table = (out / "results.md").read_text()
    assert "Top-5" not in table and all(f"| {m} |" in table for m in MODELS)  # 3 classes: no top-5
    assert " ± " in table and "Status" not in table  # two seeds give a std; every run is done
    with (out / "results.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["model"] for row in rows] == MODELS and rows[0]["seeds"] == "2"
    assert all(row["status"] == "done" and float(row["images_per_sec"]) > 0 for row in rows)
    for plot in ("accuracy_vs_macs.png", "accuracy_vs_time.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "lenet5_modern" in page


def test_finished_runs_are_not_trained_again_and_new_seeds_join(folder: Path, tmp_path: Path):
    spec = _spec(folder, tmp_path, ["lenet5_modern"])
    first = _compare(spec)
    (record,) = first
    assert (record["model"], record["seed"], record["status"], record["epochs"]) == (
        "lenet5_modern",
        0,
        "done",
        1,
    )
    assert record["params"] > 0 and record["images_per_sec"] > 0
    (wall,) = _column(tmp_path, "SELECT wall_seconds FROM runs")
    assert 0 < record["seconds"] <= wall  # the epoch's time, within the run's wall time
    assert 0 <= record["top1_error"] <= 1 and record["top5_error"] is None
    checkpoint = tmp_path / "runs" / "model=lenet5_modern-s0" / "last.pt"
    written = checkpoint.stat().st_mtime_ns
    messages: list[str] = []
    assert _compare(spec, messages) == first and messages == []
    assert checkpoint.stat().st_mtime_ns == written
    more = _compare(_spec(folder, tmp_path, ["lenet5_modern"], seeds=2))
    assert more[0] == record and [r["seed"] for r in more] == [0, 1]
    assert _column(tmp_path, "SELECT attempts FROM runs") == [1, 1]


def test_other_settings_in_the_same_folder_are_refused(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text("{}\n")  # an older comparison's store
    messages: list[str] = []
    _compare(_spec(folder, tmp_path, ["lenet5_modern"]), messages)
    assert messages[0].startswith("ignoring") and "results.jsonl" in messages[0]
    with pytest.raises(StudyError, match="other settings \\(epochs 1 -> 2\\)"):
        _compare(_spec(folder, tmp_path, ["lenet5_modern"], epochs=2))


class _Failing(nn.Module):
    """Raises in its first training step (evaluation and summaries work)."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels * 28 * 28, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("this network cannot train")
        return self.fc(x.flatten(1))


class _Diverging(_Failing):
    """Trains, but every loss is NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * float("nan")


_OPTIONS = {"num_classes": num_classes_option(3), "in_channels": in_channels_option(1)}


@register_model(input_size=(1, 28, 28), paper="test network", options=_OPTIONS)
def compare_failing_net(**options) -> nn.Module:
    """A linear network that raises when it trains."""
    return _Failing(options["num_classes"], options["in_channels"])


@register_model(input_size=(1, 28, 28), paper="test network", options=_OPTIONS)
def compare_diverging_net(**options) -> nn.Module:
    """A linear network whose outputs are NaN."""
    return _Diverging(options["num_classes"], options["in_channels"])


@register_model(input_size=(1, 32, 32), paper="test network", options=_OPTIONS)
def compare_large_input_net(**options) -> nn.Module:
    """One 30x30 convolution: 28x28 images are too small."""
    return nn.Sequential(
        nn.Conv2d(options["in_channels"], options["num_classes"], 30), nn.Flatten()
    )


def test_diverged_and_failed_runs_are_recorded_and_the_others_go_on(folder: Path, tmp_path: Path):
    models = ["compare_failing_net", "compare_diverging_net", "lenet5_modern"]
    records = _compare(_spec(folder, tmp_path, models))
    assert [(r["model"], r["status"]) for r in records] == [
        ("compare_failing_net", "failed"),
        ("compare_diverging_net", "diverged"),
        ("lenet5_modern", "done"),
    ]
    assert records[0]["error"] == "RuntimeError: this network cannot train"
    assert records[1]["top1_error"] is None and records[2]["top1_error"] is not None
    rows = summarize_results(records)
    assert [row["status"] for row in rows] == ["1 failed", "1 diverged", "done"]
    paths = write_report(rows, tmp_path, title="t")
    table = paths["markdown"].read_text()
    assert "| compare_diverging_net |" in table and "| 0 | 1 diverged |" in table
    assert "compare_failing_net seed 0: RuntimeError: this network cannot train" in table
    assert "this network cannot train" in paths["html"].read_text()


def test_study_status_and_report_read_a_comparison_folder(folder: Path, tmp_path: Path) -> None:
    models = ["compare_failing_net", "lenet5_modern"]
    _compare(_spec(folder, tmp_path, models))
    status = runner.invoke(app, ["study", "status", str(tmp_path)], terminal_width=200)
    assert status.exit_code == 0, status.output
    assert "failed model=compare_failing_net seed 0: RuntimeError" in status.output
    (counts,) = [line for line in status.output.splitlines() if line.count("│") == 7]
    cells = [cell.strip() for cell in counts.split("│")[1:6]]
    assert cells == ["0", "0", "1", "0", "1"]  # pending, running, done, diverged, failed
    report = runner.invoke(app, ["study", "report", str(tmp_path)], terminal_width=200)
    assert report.exit_code == 0, report.output
    table = (tmp_path / "results.md").read_text()
    assert table.startswith("# 2 models on folder:") and "(1 epochs each)" in table
    assert "| lenet5_modern |" in table and "RuntimeError: this network cannot train" in table
    assert (tmp_path / "report.html").is_file()
    best = runner.invoke(app, ["study", "best", str(tmp_path)])
    assert best.exit_code == 2 and "holds a comparison" in best.output


def test_a_network_trains_in_its_small_input_form_on_images_too_small_for_the_paper_one(
    folder: Path, tmp_path: Path
) -> None:
    (record,) = _compare(_spec(folder, tmp_path, ["nin"]))  # the ImageNet NiN needs 67 px
    assert record["status"] == "done" and record["model_options"] == {"small_input": True}
    channels = record["image_shape"][0]
    convolutions = [(channels, 192, 5), (192, 160, 1), (160, 96, 1), (96, 192, 5), (192, 192, 1)]
    convolutions += [(192, 192, 1), (192, 192, 3), (192, 192, 1), (192, 3, 1)]  # 3 classes
    assert record["params"] == sum(i * o * k * k + o for i, o, k in convolutions)


def test_a_model_that_cannot_take_the_images_is_skipped_with_the_reason(
    folder: Path, tmp_path: Path
) -> None:
    messages: list[str] = []
    assert _compare(_spec(folder, tmp_path, ["compare_large_input_net"]), messages) == []
    assert "skipping compare_large_input_net" in messages[0]
    assert "the smallest it accepts is 30x30" in messages[0]


def _records(*runs: tuple) -> list[dict]:
    """Report records of model `a`: (seed, status, images/s, seconds, top-1 error, epochs)."""
    return [
        {"model": "a", "seed": seed, "status": status, "error": None, "params": 10, "macs": 100}
        | {"images_per_sec": r, "seconds": s, "top1_error": e, "top5_error": None, "epochs": n}
        for seed, status, r, s, e, n in runs
    ]


def test_summary_gives_mean_and_std_over_the_finished_seeds_of_each_model() -> None:
    records = _records(
        (0, "done", 100.0, 10.0, 0.2, 7),
        (1, "done", 300.0, 20.0, 0.4, 9),
        (2, "diverged", 1.0, 1.0, None, 1),
    )
    (row,) = summarize_results(records)
    assert row["images_per_sec"].mean == 200 and row["train_seconds"].mean == 15
    assert row["top1_error"].mean == pytest.approx(0.3)
    assert row["top1_error"].std == pytest.approx(0.1414, abs=1e-4)
    assert row["seeds"] == 2 and row["status"] == "1 diverged"
    # under a time budget the seeds reach different epochs: the table shows the range
    assert "| 7-9 | 15 ± 7 | 200 | 30.0 ± 14.1 | 2 | 1 diverged |" in markdown_table([row])


def test_one_seed_reads_n_1_never_a_zero_spread() -> None:
    (row,) = summarize_results(_records((0, "done", 100.0, 10.0, 0.25, 4)))
    table = markdown_table([row])
    assert "| 4 | 10 (n = 1) | 100 | 25.0 (n = 1) | 1 |" in table and "±" not in table


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


@pytest.mark.parametrize(
    ("values", "log"),
    [([169.0, 175.0], False), ([651e3, 40.5e6, 555e6], True), ([0.0, 100.0], False), ([], False)],
)
def test_the_axis_is_logarithmic_only_across_decades(values: list[float], log: bool) -> None:
    assert spans_decades(values) is log
