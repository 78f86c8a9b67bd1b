"""`validation`: runs scored on a stratified holdout of the training split; `best` tests apart."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from study_helpers import DATA, tiny_spec
from synthetic_store import synthetic_study

from cnnlab import evaluate, model_from_checkpoint
from cnnlab.data import BatchLoader, TensorDataset, channel_mean_std
from cnnlab.engine.runlog import read_metrics
from cnnlab.studies import StudySpec, run_study
from cnnlab.studies.best import run_best
from cnnlab.studies.report import write_report
from cnnlab.studies.results import load_results
from cnnlab.studies.shared_data import data_key, open_data, prepare_data
from cnnlab.studies.store import StudyStore

FRACTION = 0.25  # of 32 training images a class: 8 held out per class


LINES: list[str] = []  # the study's log: its banner, then one line per run


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("validation")
    spec = tiny_spec(factors={"lr": [0.05]}, seeds=2, validation=FRACTION)
    run_study(StudySpec.from_dict(spec), folder, data=DATA, threads=1, log=LINES.append)
    return folder


def _positions(images: torch.Tensor) -> list[int]:
    """Where each image sits in the synthetic training split (its noise makes it unique)."""
    flat = DATA.train.images.flatten(1)
    return [int(torch.nonzero((flat == image.flatten()).all(1))[0]) for image in images]


def _evaluated(run: Path, dataset: TensorDataset) -> tuple[float, list[float]]:
    """The run's last weights evaluated here on `dataset`: accuracy, and the run's mean."""
    model, state = model_from_checkpoint(run / "last.pt")
    loader = BatchLoader(dataset, 64, mean=tuple(state["mean"]), std=tuple(state["std"]))
    return evaluate(model, loader, dataset.classes).top1, state["mean"]


def test_the_holdout_is_stratified_disjoint_and_the_same_for_every_run(tmp_path: Path) -> None:
    config = StudySpec.from_dict(tiny_spec()).base
    splits = open_data(prepare_data(tmp_path, config, None, DATA, holdout=FRACTION))
    assert torch.bincount(splits.test.labels).tolist() == [8, 8, 8, 8]
    assert torch.bincount(splits.train.labels).tolist() == [24, 24, 24, 24]
    held, kept = _positions(splits.test.images), _positions(splits.train.images)
    assert sorted(held + kept) == list(range(len(DATA.train)))  # disjoint, nothing lost
    assert splits.mean == pytest.approx(channel_mean_std(splits.train.images)[0])
    # One copy for every seed and point of a study, cut with seed 0 the same way in a new one.
    assert data_key(config.replace(seed=5), None, FRACTION) == data_key(config, None, FRACTION)
    assert data_key(config, None, FRACTION) != data_key(config, None)  # the full copy is apart
    again = open_data(prepare_data(tmp_path / "again", config, None, DATA, holdout=FRACTION))
    assert torch.equal(again.test.images, splits.test.images)


def test_runs_train_without_the_holdout_and_are_scored_on_it(study: Path) -> None:
    config = StudySpec.from_dict(tiny_spec()).base
    holdout = open_data(prepare_data(study, config, None, holdout=FRACTION))
    records = StudyStore(study).runs()
    assert len(records) == 4 and {r.status for r in records} == {"done"}
    for record in records:
        accuracy, mean = _evaluated(Path(record.config["out"]), holdout.test)
        assert record.final["val_acc"] == pytest.approx(accuracy)
        assert mean == pytest.approx(list(holdout.mean))  # the statistics of train - holdout


def test_the_holdout_score_is_named_val_in_the_run_lines_metrics_files_and_store(
    study: Path,
) -> None:
    runs = [line for line in LINES if " seed " in line]  # after the "N runs to train" banner
    assert len(runs) == 4 and all(" val_acc " in line for line in runs)
    assert not any("test_" in line for line in LINES)
    for record in StudyStore(study).runs():
        assert set(record.final) == {"train_loss", "train_acc", "val_loss", "val_acc", "epochs"}
        rows = read_metrics(record.config["out"])
        assert all("val_acc" in row and "test_acc" not in row for row in rows)
        assert rows[-1]["val_acc"] == pytest.approx(record.final["val_acc"])
        header = (Path(record.config["out"]) / "metrics.csv").read_text().splitlines()[0]
        assert "val_loss,val_acc,val_top5" in header and "test_" not in header
        stored = StudyStore(study).epochs(record.id)
        assert [set(row) >= {"val_acc", "val_loss"} for row in stored] == [True, True]


def test_the_report_says_val_and_chooses_on_validation_accuracy(study: Path) -> None:
    markdown = (write_report(study).parent / "report.md").read_text()
    assert "| lr | n | diverged | failed | train loss | train acc | val acc |" in markdown
    assert "highest mean val accuracy" in markdown and "validation holdout (25%" in markdown
    assert "test acc" not in markdown  # nothing read the test split yet


def test_best_trains_base_and_best_on_the_full_training_split_tested_on_fresh_seeds(
    tmp_path: Path,
) -> None:
    # validation scores in which lr 0.05 is significantly better than the base
    scores = {"base": [0.50, 0.51, 0.52], "lr=0.05": [0.60, 0.61, 0.62]}
    study = synthetic_study(tmp_path, scores, factors={"lr": [0.05]}, seeds=3, validation=FRACTION)
    table = run_best(study, threads=1, log=None)
    assert table.title == "Tuned against default (test accuracy, fresh seeds 3..5)"
    assert table.columns[-1] == "test acc" and [row[1] for row in table.rows] == ["3", "3"]
    store = StudyStore(study)
    finals = store.runs(where="point LIKE 'final:%'")
    assert {(r.point, r.seed) for r in finals} == {
        (point, seed) for point in ("final:base", "final:lr=0.05") for seed in (3, 4, 5)
    }
    for record in finals:
        accuracy, mean = _evaluated(Path(record.config["out"]), DATA.test)
        assert record.final["test_acc"] == pytest.approx(accuracy)  # scored on the test split
        assert mean == pytest.approx(list(DATA.mean))  # the full training split's statistics
    base_row = next(row for row in load_results(study).factors["lr"] if row.is_base)
    assert base_row.done == 3  # the final runs stay out of the factor tables
    test_accs = [r.final["test_acc"] for r in finals if r.point == "final:base"]
    assert table.rows[0][-1].startswith(f"{sum(test_accs) / 3:.3f}")
    # Resumable like every run: a second call trains nothing.
    run_best(study, threads=1, log=None)
    assert [r.attempts for r in store.runs(where="point LIKE 'final:%'")] == [1] * len(finals)
    assert "fresh seeds 3..5" in (study / "report" / "report.md").read_text()
