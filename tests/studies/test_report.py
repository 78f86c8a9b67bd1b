"""Reports from the store alone, and the best combination against the base."""

from __future__ import annotations

import re
from pathlib import Path
from statistics import fmean, stdev

import pytest
from study_helpers import DATA, tiny_spec
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.studies import StudySpec, run_study
from cnnlab.studies.best import run_best
from cnnlab.studies.report import write_report
from cnnlab.studies.results import load_results
from cnnlab.studies.store import StudyStore


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lr (with one diverging value) and batch size around the base, 2 seeds each."""
    folder = tmp_path_factory.mktemp("study")
    spec = tiny_spec(factors={"lr": [0.05, 1e9], "batch_size": [16]}, seeds=2)
    run_study(StudySpec.from_dict(spec), folder, data=DATA, threads=1, log=None)
    return folder


def test_tables_hold_mean_and_sample_std_over_seeds_with_n_and_diverged(study: Path) -> None:
    results = load_results(study)
    lr_rows = {row.label: row for row in results.factors["lr"]}
    assert list(lr_rows) == ["0.05", "0.1 (base)", "1000000000.0"]
    finals = [r.final["test_acc"] for r in StudyStore(study).runs(where="point = 'lr=0.05'")]
    stat = lr_rows["0.05"].metrics["test_acc"]
    assert stat.n == 2 and stat.mean == pytest.approx(fmean(finals))
    assert stat.std == pytest.approx(stdev(finals))
    diverged = lr_rows["1000000000.0"]
    assert diverged.diverged == 2 and diverged.done == 0 and diverged.metrics["test_acc"].n == 0
    assert len(lr_rows["0.05"].curves["test_acc"]) == 2  # one mean per epoch
    assert results.best()["lr"].value in (0.05, 0.1)


def test_the_report_is_markdown_pngs_and_one_self_contained_html_page(study: Path) -> None:
    page = write_report(study)
    markdown = (page.parent / "report.md").read_text()
    assert "| lr | n | diverged | failed | train loss | train acc | test acc |" in markdown
    assert re.search(r"\| 1000000000.0 \| 0 \| 2 \| 0 \| - \| - \| - \|", markdown)
    assert "Best value per factor" in markdown and "torch:" in markdown and "factors:" in markdown
    for name in ("lr.png", "lr_curves.png", "batch_size.png", "batch_size_curves.png"):
        assert (page.parent / name).read_bytes()[:4] == b"\x89PNG"
    text = page.read_text()
    assert text.count('src="data:image/png;base64,') == 4
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing to fetch: opens offline


def test_best_trains_the_combination_with_the_same_seeds_beside_the_base(study: Path) -> None:
    results = load_results(study)
    best = results.best()
    table = run_best(study, threads=1, log=None)
    assert [row[0] for row in table.rows][0] == "base (default)"
    assert table.rows[1][1] == "2"  # n: both seeds
    store = StudyStore(study)
    name = table.rows[1][0].removeprefix("best: ")
    seeds = sorted(record.seed for record in store.runs(where="point = ?", parameters=(name,)))
    assert seeds == [0, 1]
    expected = (
        ",".join(f"{factor}={row.value}" for factor, row in best.items() if not row.is_base)
        or "base"
    )
    assert name == expected
    assert "Tuned against default" in (study / "report" / "report.md").read_text()


def test_cli_report_prints_the_tables(study: Path) -> None:
    cli = CliRunner()
    result = cli.invoke(app, ["study", "report", str(study)])
    assert result.exit_code == 0 and "Best value per factor" in result.output
    assert "report.html" in result.output
