"""What a training run reports: per-epoch metric files, and the console display.

`metrics.jsonl` and `metrics.csv` hold one row per epoch with the columns of `METRIC_COLUMNS`:
mean training loss and accuracy (on augmented batches, as trained), test loss, top-1 and top-5
accuracy (fractions; `val_loss`, `val_acc`, `val_top5` when the run is scored on a validation
holdout, `DataSplits.scored_split`), the learning rate after the epoch's last step, the epoch's
seconds (training and evaluation), training images per second, and a status: `ok`, `completed` (the
run's last epoch) or `diverged`. Both files are rewritten atomically from the run's history
after every epoch, so after a crash or a resume they hold exactly the epochs the checkpoint
knows. Non-finite numbers (a diverged loss) are written as JSON `null` and `nan` in the CSV.

`TrainingDisplay` is rich's progress bar with loss, accuracy and images/s while an epoch runs
(only on a terminal: with images/s and the epoch's time left) and one summary line per epoch
(always, when enabled; never wrapped, so a log file holds one line per epoch).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cnnlab.fileio import atomic_write

METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "test_top5",
    "lr",
    "seconds",
    "images_per_sec",
    "status",
)


SCORED_COLUMNS = ("test_loss", "test_acc", "test_top5")  # the metrics of the split scored on


def scored_names(row: dict, split: str) -> dict:
    """`row` with the scored split's metrics named for `split` (`val_acc` for a holdout)."""
    if split == "test":
        return row
    return {
        key.replace("test_", f"{split}_", 1) if key in SCORED_COLUMNS else key: value
        for key, value in row.items()
    }


def _json_value(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_metrics(out_dir: Path, history: list[dict], split: str = "test") -> None:
    """Rewrite `metrics.jsonl` and `metrics.csv` in `out_dir` from `history` (atomically).

    `split` names the scored split's columns (`val_loss`, `val_acc`, `val_top5` for `val`).
    """
    rows = [scored_names({key: row.get(key) for key in METRIC_COLUMNS}, split) for row in history]
    columns = list(scored_names(dict.fromkeys(METRIC_COLUMNS), split))
    with atomic_write(out_dir / "metrics.jsonl", mode="w") as file:
        for row in rows:
            file.write(json.dumps({key: _json_value(value) for key, value in row.items()}))
            file.write("\n")
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns)
    writer.writeheader()
    writer.writerows(
        {key: "" if value is None else value for key, value in row.items()} for row in rows
    )
    with atomic_write(out_dir / "metrics.csv", mode="w") as file:
        file.write(table.getvalue())


def read_metrics(out_dir: str | Path) -> list[dict]:
    """The rows of a run's `metrics.jsonl` (null numbers read back as NaN)."""
    rows = []
    for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.append({k: math.nan if v is None and k != "status" else v for k, v in row.items()})
    return rows


def format_row(row: dict, epochs: int) -> str:
    """One epoch's summary line, e.g. `epoch 3/10  train loss 0.2311 acc 93.10%  test ...`.

    Top-5 accuracy appears only when the run recorded one (more than 5 classes).
    """

    def percent(key: str) -> str:
        value = row.get(key)
        return "-" if value is None or math.isnan(value) else f"{value:.2%}"

    def number(key: str, digits: int = 4) -> str:
        value = row.get(key)
        return "-" if value is None else f"{value:.{digits}f}"

    top5 = "" if row.get("test_top5") is None else f"top-5 {percent('test_top5')}  "
    text = (
        f"epoch {row['epoch']}/{epochs}  train loss {number('train_loss')} "
        f"acc {percent('train_acc')}  test loss {number('test_loss')} acc {percent('test_acc')}  "
        f"{top5}lr {row['lr']:.3g}  {row['images_per_sec']:,.0f} img/s  {row['seconds']:.1f} s"
    )
    return text if row["status"] != "diverged" else f"{text}  [bold red]diverged[/]"


class TrainingDisplay:
    """The console side of a run; everything is a no-op when `enabled` is false."""

    def __init__(self, enabled: bool, epochs: int, console: Console | None = None) -> None:
        self.enabled = enabled
        self.epochs = epochs
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}  {task.fields[speed]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not (enabled and self.console.is_terminal),
        )
        self.task: int | None = None

    @property
    def shows_bar(self) -> bool:
        """Whether a live bar is drawn (so per-step values are worth reading back)."""
        return not self.progress.disable

    def __enter__(self) -> TrainingDisplay:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def start_epoch(self, epoch: int, steps: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        fields = {"epoch": epoch, "epochs": self.epochs, "loss": "-", "acc": "-", "speed": ""}
        self.task = self.progress.add_task("train", total=steps, **fields)

    def update(self, step: int, loss: float, accuracy: float, images_per_sec: float) -> None:
        if self.task is not None:
            self.progress.update(
                self.task,
                completed=step,
                loss=f"{loss:.4f}",
                acc=f"{accuracy:.2%}",
                speed=f"{images_per_sec:,.0f} img/s",
            )

    def end_epoch(self, row: dict) -> None:
        self.message(format_row(row, self.epochs))

    def end_run(self, history: list[dict], out_dir: Path, curves: Path | None) -> None:
        """Where the best epoch's checkpoint and the curves are."""
        evaluated = [row for row in history if row.get("test_acc") is not None]
        if evaluated:
            best = max(evaluated, key=lambda row: row["test_acc"])
            self.message(
                f"best test accuracy {best['test_acc']:.2%} (epoch {best['epoch']}): "
                f"{out_dir / 'best.pt'}"
            )
        if curves is not None:
            self.message(f"curves: {curves}")

    def message(self, text: str) -> None:
        """One line, never wrapped: a log file or a pipe keeps one line per epoch."""
        if self.enabled:
            self.console.print(text, highlight=False, soft_wrap=True)
