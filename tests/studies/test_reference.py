"""A spec's `reference` CSV: checked up front, then set beside the measured rows in the report."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from study_helpers import REPO, tiny_spec
from synthetic_store import synthetic_study
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.errors import OptionError
from cnnlab.reporting import Stat
from cnnlab.studies import StudySpec
from cnnlab.studies.reference import agreement
from cnnlab.studies.report import write_report

BASE = [0.50, 0.51, 0.52]
LR_005 = [0.60, 0.61, 0.62]


def _spec_file(folder: Path, csv_text: str, **changes) -> Path:
    (folder / "published.csv").write_text(csv_text)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(reference="published.csv", **changes)))
    return path


def test_published_within_two_standard_errors_plus_half_a_point_agrees() -> None:
    measured = Stat.of([0.50, 0.52])  # mean 0.51, standard error 0.01: agrees within 0.025
    assert agreement(measured, 0.534) == "agrees" and agreement(measured, 0.486) == "agrees"
    assert agreement(measured, 0.536) == "differs" and agreement(measured, 0.484) == "differs"
    assert agreement(Stat.of([0.51]), 0.51) == "too few runs"


def test_the_report_sets_each_published_row_beside_the_measured_one(tmp_path: Path) -> None:
    csv_text = (
        "factor,value,loss,train_acc,test_acc\n"
        "base,,,,0.514\n"
        "lr,0.05,0.39,,0.64\n"
        "lr,0.2,,0.65,\n"
        "best,lr=0.05,,,0.61\n"
    )
    spec = _spec_file(tmp_path, csv_text)
    accuracies = {"base": BASE, "lr=0.05": LR_005, "lr=0.2": [0.64, 0.65, 0.66]}
    folder = synthetic_study(
        tmp_path / "study",
        accuracies,
        spec,
        reference="published.csv",
        factors={"lr": [0.05, 0.2]},
        seeds=3,
    )
    page = write_report(folder)
    markdown = (page.parent / "report.md").read_text()
    assert "2 of 3 published test-accuracy rows agree." in markdown
    assert "| base | test acc | 0.510 ± 0.010 | 0.514 | -0.004 | agrees |" in markdown
    assert "| lr=0.05 | train loss | 0.390 ± 0.010 | 0.390 | +0.000 | agrees |" in markdown
    assert "| lr=0.05 | test acc | 0.610 ± 0.010 | 0.640 | -0.030 | differs |" in markdown
    assert "| lr=0.2 | train acc | 0.650 ± 0.010 | 0.650 | +0.000 | agrees |" in markdown
    assert "| best: lr=0.05 | test acc | 0.610 ± 0.010 | 0.610 | +0.000 | agrees |" in markdown
    html = page.read_text()
    assert "<td>lr=0.05</td><td>test acc</td><td>0.610 ± 0.010</td><td>0.640</td>" in html
    assert "2 of 3 published test-accuracy rows agree." in html
    shown = CliRunner().invoke(app, ["study", "report", str(folder)], terminal_width=250)
    assert shown.exit_code == 0 and "2 of 3 published test-accuracy rows agree." in shown.output


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("factor,value,accuracy\nlr,0.05,0.5\n", "unknown or missing columns (accuracy)"),
        ("factor,value\nlr,0.05\n", "no metric column"),
        ("factor,value,test_acc\nmomentum,0.9,0.5\n", "row 2: unknown factor 'momentum'"),
        ("factor,value,test_acc\nlr,0.05,0.5\nlr,0.3,0.5\n", "row 3: lr 0.3 is not a value"),
        ("factor,value,test_acc\nlr,0.05,high\n", "row 2: test_acc 'high' is not a number"),
        ("factor,value,test_acc\nbest,lr:0.05,0.5\n", "lists factor=value pairs"),
        ("factor,value,test_acc\nbest,pooling=max,0.5\n", "unknown factor 'pooling'"),
    ],
)
def test_a_bad_reference_is_one_line_before_anything_runs(
    tmp_path: Path, csv_text: str, message: str
) -> None:
    spec = _spec_file(tmp_path, csv_text)
    with pytest.raises(OptionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        StudySpec.from_yaml(spec)
    result = CliRunner().invoke(app, ["study", "run", str(spec), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "out" / "study.db").exists()


def test_a_missing_reference_file_is_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(reference="nowhere.csv")))
    with pytest.raises(OptionError, match="reference .*nowhere.csv: cannot read"):
        StudySpec.from_yaml(spec)


def test_the_rows_written_from_the_published_page_fit_the_classic_study(tmp_path: Path) -> None:
    page = REPO.parent / "shared" / "reference" / "lenet5_fashion_mnist_ablation.md"
    spec = REPO / "examples" / "lenet5_classic_study.yaml"
    if not page.is_file() or not spec.is_file():
        pytest.skip(f"needs {page} and {spec}")
    script = REPO / "examples" / "classic_reference.py"
    csv = tmp_path / "lenet5_classic_reference.csv"
    command = [sys.executable, str(script), "--source", str(page), "--out", str(csv)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    shutil.copy(spec, tmp_path / spec.name)  # its `reference:` is relative to the spec
    rows = StudySpec.from_yaml(tmp_path / spec.name).reference  # checked against its values
    assert {row["factor"] for row in rows} == {
        "base", "lr", "batch_size", "conv_activation", "pooling", "c1_kernel_size", "pool_size",
        "best",
    }  # fmt: skip
