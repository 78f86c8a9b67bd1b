"""Reports from the study folder alone: tables, figures, statistics against the base, study best."""

from __future__ import annotations

import re
from pathlib import Path
from statistics import fmean, stdev

import pytest
from scipy import stats
from study_helpers import DATA, tiny_spec
from synthetic_store import synthetic_study
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.errors import StudyError
from cnnlab.studies import StudySpec, run_study
from cnnlab.studies.best import run_best
from cnnlab.studies.report import write_report
from cnnlab.studies.results import load_results
from cnnlab.studies.store import StudyStore

BASE = [0.50, 0.51, 0.52]
CLEARLY_BETTER = [0.60, 0.61, 0.62]
HIGHER_BUT_NOISY = [0.30, 0.95, 0.70]  # mean 0.65, above CLEARLY_BETTER's, spread too wide


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lr (with one diverging value) and batch size around the base, 2 seeds each (trained)."""
    folder = tmp_path_factory.mktemp("study")
    spec = tiny_spec(factors={"lr": [0.05, 1e9], "batch_size": [16]}, seeds=2)
    run_study(StudySpec.from_dict(spec), folder, data=DATA, threads=1, log=None)
    return folder


def test_tables_hold_mean_and_sample_std_over_seeds_with_n_and_diverged(study: Path) -> None:
    results = load_results(study)
    lr_rows = {row.label: row for row in results.factors["lr"]}
    assert list(lr_rows) == ["0.05", "0.1 (base)", "1000000000.0"]
    finals = [r.final["test_acc"] for r in StudyStore(study).runs(where="point = 'lr=0.05'")]
    stat = lr_rows["0.05"].metrics["scored_acc"]
    assert stat.n == 2 and stat.mean == pytest.approx(fmean(finals))
    assert stat.std == pytest.approx(stdev(finals))
    diverged = lr_rows["1000000000.0"]
    assert diverged.diverged == 2 and diverged.done == 0 and diverged.metrics["scored_acc"].n == 0
    assert diverged.verdict() == "too few runs"
    assert len(lr_rows["0.05"].curves["scored_acc"]) == 2  # one mean per epoch


def test_the_report_is_markdown_pngs_and_one_self_contained_html_page(study: Path) -> None:
    page = write_report(study)
    markdown = (page.parent / "report.md").read_text()
    header = "| lr | n | diverged | failed | train loss | train acc | test acc |"
    assert header + " Δ test acc vs base [95% CI] | verdict |" in markdown
    assert re.search(
        r"\| 1000000000.0 \| 0 \| 2 \| 0 \| - \| - \| - \| - \| too few runs \|", markdown
    )
    assert "Best value per factor" in markdown and "torch:" in markdown and "factors:" in markdown
    assert "scored on: test split; chance is 1/4 classes" in markdown
    for name in ("lr.png", "lr_curves.png", "batch_size.png", "batch_size_curves.png"):
        assert (page.parent / name).read_bytes()[:4] == b"\x89PNG"
    text = page.read_text()
    assert text.count('src="data:image/png;base64,') == 4
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing to fetch: opens offline
    assert "<td>1000000000.0</td><td>0</td><td>2</td>" in text  # the same cells as the Markdown


def test_cli_report_prints_the_tables(study: Path) -> None:
    result = CliRunner().invoke(app, ["study", "report", str(study)], terminal_width=250)
    assert result.exit_code == 0 and "Best value per factor" in result.output
    assert "report.html" in result.output


def test_each_value_against_the_base_is_welchs_interval_and_best_must_be_significant(
    tmp_path: Path,
) -> None:
    accuracies = {"base": BASE, "lr=0.05": CLEARLY_BETTER, "lr=0.2": HIGHER_BUT_NOISY}
    folder = synthetic_study(tmp_path, accuracies, factors={"lr": [0.05, 0.2]}, seeds=3)
    results = load_results(folder)
    rows = {row.label: row for row in results.factors["lr"]}
    interval = stats.ttest_ind(CLEARLY_BETTER, BASE, equal_var=False).confidence_interval(0.95)
    clear = rows["0.05"].against_base
    assert clear.mean == pytest.approx(fmean(CLEARLY_BETTER) - fmean(BASE))
    assert (clear.low, clear.high) == pytest.approx((interval.low, interval.high))
    assert rows["0.05"].verdict() == "significant"
    assert rows["0.2"].verdict() == "within noise"  # a higher mean, but not shown better
    assert [row.value for row in results.best()] == [0.05]
    markdown = (write_report(folder).parent / "report.md").read_text()
    assert "| lr=0.05 | 0.610 ± 0.010 | 0.510 ± 0.010 |" in markdown
    table = run_best(folder, threads=1, log=None)  # every run of both points is finished
    assert [row[0] for row in table.rows] == ["base (default)", "best: lr=0.05"]
    assert [r.attempts for r in StudyStore(folder).runs()] == [1] * 9  # nothing trained again


def test_when_no_value_beats_the_base_the_report_and_study_best_say_so(tmp_path: Path) -> None:
    accuracies = {"base": BASE, "lr=0.05": HIGHER_BUT_NOISY, "lr=0.2": [0.40, 0.41, 0.42]}
    folder = synthetic_study(tmp_path, accuracies, factors={"lr": [0.05, 0.2]}, seeds=3)
    rows = {row.label: row for row in load_results(folder).factors["lr"]}
    assert rows["0.2"].verdict() == "significant" and rows["0.2"].against_base.high < 0  # worse
    markdown = (write_report(folder).parent / "report.md").read_text()
    assert "| no value beats the base | - | 0.510 ± 0.010 | - |" in markdown
    with pytest.raises(StudyError, match="no value beats the base"):
        run_best(folder, threads=1, log=None)


def test_accuracy_within_one_point_of_one_over_classes_is_at_chance(tmp_path: Path) -> None:
    accuracies = {"base": BASE, "lr=0.05": [0.25, 0.255, 0.245], "lr=0.2": [0.27, 0.27, 0.27]}
    folder = synthetic_study(tmp_path, accuracies, factors={"lr": [0.05, 0.2]}, seeds=3)
    rows = {row.label: row for row in load_results(folder).factors["lr"]}
    assert rows["0.05"].verdict() == "significant; at chance"  # 4 classes: chance 0.25
    assert not rows["0.2"].at_chance  # two points above chance


def test_one_seed_reads_n_1_and_claims_no_difference(tmp_path: Path) -> None:
    folder = synthetic_study(
        tmp_path, {"base": [0.5], "lr=0.05": [0.9]}, factors={"lr": [0.05]}, seeds=1
    )
    markdown = (write_report(folder).parent / "report.md").read_text()
    assert (
        "| 0.05 | 1 | 0 | 0 | 0.100 (n = 1) | 0.900 (n = 1) | 0.900 (n = 1) | - | too few runs |"
        in markdown
    )
    assert "± 0.000" not in markdown and "no value beats the base" in markdown
    with pytest.raises(StudyError, match="with one seed no difference can be shown"):
        run_best(folder, threads=1, log=None)
    answer = CliRunner().invoke(app, ["study", "best", str(folder)])  # an outcome, not an error
    assert answer.exit_code == 0 and "no value beats the base" in answer.output
    assert "nothing to combine" in answer.output and "error" not in answer.output


def test_a_grid_shows_every_combination_a_heat_map_and_labelled_marginal_means(
    tmp_path: Path,
) -> None:
    accuracies = {
        "base": BASE,  # lr 0.1, batch 32
        "batch_size=16": [0.70, 0.71, 0.72],
        "lr=0.05": [0.52, 0.53, 0.54],
        "lr=0.05,batch_size=16": [0.90, 0.91, 0.92],
    }
    folder = synthetic_study(
        tmp_path,
        accuracies,
        mode="grid",
        factors={"lr": [0.05, 0.1], "batch_size": [16, 32]},
        seeds=3,
    )
    results = load_results(folder)
    assert sorted(cell.label for cell in results.cells) == sorted(accuracies)
    assert [s.label for s in results.best()] == ["lr=0.05,batch_size=16"]
    assert results.best_changes() == {"lr": 0.05, "batch_size": 16}
    page = write_report(folder)
    markdown = (page.parent / "report.md").read_text()
    assert (
        "| 0.1 | 32 | 3 | 0 | 0 | 0.490 ± 0.010 | 0.510 ± 0.010 | 0.510 ± 0.010 | (base) | base |"
        in markdown
    )
    assert "| 0.05 | 16 | 3 |" in markdown
    # the marginal means say what they average over, and are not called "best" or "over seeds"
    assert "lr: marginal mean over batch_size (every run with the value" in markdown
    assert "| 0.05 | 6 | 0 | 0 |" in markdown  # 2 cells x 3 seeds
    assert "Best value per factor" not in markdown and "| lr=0.05,batch_size=16 |" in markdown
    # the base has one accuracy in the whole report: its cell's
    assert [line for line in markdown.splitlines() if "(base) |" in line] == [
        "| 0.1 | 32 | 3 | 0 | 0 | 0.490 ± 0.010 | 0.510 ± 0.010 | 0.510 ± 0.010 | (base) | base |"
    ]
    assert "| lr=0.05,batch_size=16 | 0.910 ± 0.010 | 0.510 ± 0.010 |" in markdown
    assert (page.parent / "grid.png").read_bytes()[:4] == b"\x89PNG"
