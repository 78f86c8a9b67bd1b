"""What a run prints and writes: one unwrapped line per epoch, top-5 only when it means
something, metric files named for the split the run is scored on."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from cnnlab.engine.runlog import TrainingDisplay, format_row, read_metrics, write_metrics

ROW = {
    "epoch": 3,
    "train_loss": 0.2311,
    "train_acc": 0.931,
    "test_loss": 0.3012,
    "test_acc": 0.9012,
    "test_top5": 0.9987,
    "lr": 0.05,
    "seconds": 12.5,
    "images_per_sec": 4800.0,
    "status": "ok",
}


def test_top5_is_shown_only_when_the_run_recorded_one() -> None:
    assert "top-5 99.87%" in format_row(ROW, 10)
    line = format_row({**ROW, "test_top5": None}, 10)  # 5 classes or fewer
    assert "top-5" not in line and "test loss 0.3012 acc 90.12%  lr 0.05" in line


def test_epoch_lines_are_never_wrapped_in_a_file_or_pipe() -> None:
    stream = io.StringIO()
    console = Console(file=stream, width=40)  # narrower than the line, and not a terminal
    display = TrainingDisplay(True, 10, console=console)
    assert not display.shows_bar  # no live bar outside a terminal
    with display:
        display.end_epoch(ROW)
        display.end_epoch({**ROW, "epoch": 4})
    lines = stream.getvalue().splitlines()
    assert lines == [format_row(ROW, 10), format_row({**ROW, "epoch": 4}, 10)]


def test_a_terminal_gets_a_bar_with_images_per_second_and_time_left() -> None:
    stream = io.StringIO()
    console = Console(file=stream, width=160, force_terminal=True)
    display = TrainingDisplay(True, 10, console=console)
    assert display.shows_bar
    columns = " ".join(type(column).__name__ for column in display.progress.columns)
    assert "TimeRemainingColumn" in columns
    with display:
        display.start_epoch(1, 100)
        display.update(50, 0.5, 0.8, 1234.0)
        display.progress.refresh()
    assert "1,234 img/s" in stream.getvalue()


def test_metrics_files_name_a_validation_holdouts_scores_val(tmp_path: Path) -> None:
    write_metrics(tmp_path, [ROW], "val")
    (row,) = read_metrics(tmp_path)
    assert (row["val_loss"], row["val_acc"], row["val_top5"]) == (0.3012, 0.9012, 0.9987)
    assert not any(key.startswith("test_") for key in row)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header == (
        "epoch,train_loss,train_acc,val_loss,val_acc,val_top5,lr,seconds,images_per_sec,status"
    )
    write_metrics(tmp_path, [ROW])  # scored on the test split: the names stay
    assert read_metrics(tmp_path)[0]["test_acc"] == 0.9012
