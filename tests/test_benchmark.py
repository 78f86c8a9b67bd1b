"""`cnnlab bench`: rates on both sides, FLOPs, torchvision pairing, out-of-memory rows, errors."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cnnlab.benchmark import (
    BenchSettings,
    matmul_peak_flops,
    run_benchmark,
    torchvision_counterpart,
)
from cnnlab.cli import app
from cnnlab.errors import OptionError, UnknownNameError
from cnnlab.summary import summarize

QUICK = BenchSettings(device="cpu", repeats=1)
runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_torchvision_architectures_are_timed_beside_cnnlab() -> None:
    rows = run_benchmark(["resnet18"], [2], QUICK, (3, 32, 32))
    assert [(row.source, row.batch_size) for row in rows] == [("cnnlab", 2), ("torchvision", 2)]
    flops = summarize("resnet18", (3, 32, 32), num_classes=1000).flops
    for row in rows:
        assert row.error is None and row.flops_per_image == flops > 0
        assert row.train_images_per_sec > 0 and row.infer_images_per_sec > 0
        assert row.train_flops_per_sec == pytest.approx(3 * flops * row.train_images_per_sec)
        assert row.peak_memory_bytes is None  # not measured on the CPU


def test_models_torchvision_lacks_run_alone() -> None:
    assert torchvision_counterpart("lenet5_modern") is None
    assert torchvision_counterpart("resnet20") is None
    rows = run_benchmark(["lenet5_modern"], [4], QUICK, (1, 28, 28))
    assert [row.source for row in rows] == ["cnnlab"]


def test_a_batch_that_does_not_fit_is_reported_and_the_rest_goes_on() -> None:
    huge = 2**40  # the input alone would need petabytes: the allocation fails at once
    rows = run_benchmark(["lenet5_modern"], [huge, 4], QUICK, (1, 28, 28))
    assert (
        rows[0].error == f"out of memory at batch {huge}" and rows[0].train_images_per_sec is None
    )
    assert rows[1].error is None and rows[1].train_images_per_sec > 0


def test_bad_input_fails_before_anything_runs() -> None:
    with pytest.raises(UnknownNameError, match="unknown model 'resnet9000'"):
        run_benchmark(["resnet18", "resnet9000"], [2], QUICK)
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="'cuda' is not available"):
            run_benchmark(["resnet18"], [2], BenchSettings(device="cuda"))


def test_matmul_peak_is_a_plausible_rate() -> None:
    assert 1e8 < matmul_peak_flops(torch.device("cpu")) < 1e14


def test_cli_json_reports_rows_ratios_and_peak() -> None:
    result = runner.invoke(
        app, ["bench", "-m", "resnet18", "-b", "2", "-i", "3x32x32", "--repeats", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert {row["source"] for row in payload["results"]} == {"cnnlab", "torchvision"}
    assert payload["matmul_peak_flops"] > 0
    (ratio,) = payload["ratios"]
    assert ratio["model"] == "resnet18" and ratio["train"] > 0 and ratio["infer"] > 0


def test_cli_table_and_one_line_errors() -> None:
    table = runner.invoke(
        app, ["bench", "-m", "lenet5_modern", "-b", "4", "-i", "1x28x28", "--repeats", "1"]
    )
    assert (
        table.exit_code == 0 and "lenet5_modern" in table.stdout and "matmul peak" in table.stdout
    )
    for args, message in (
        (["-m", "nope"], "unknown model 'nope'"),
        (["-b", "0"], "must be positive"),
        (["-i", "3x32"], "is not of the form CxHxW"),
    ):
        result = runner.invoke(app, ["bench", *args])
        assert result.exit_code == 2 and message in result.output
        assert "Traceback" not in result.output
