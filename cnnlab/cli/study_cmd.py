"""`cnnlab study`: run an ablation study, watch it, report it, check its best combination."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cnnlab.cli import app, console, print_table
from cnnlab.studies.runner import run_study
from cnnlab.studies.store import STATUSES, open_existing

study_app = typer.Typer(
    help="Ablation studies: factor sweeps over repeated seeds.", no_args_is_help=True
)
app.add_typer(study_app, name="study")


@study_app.command("run")
def run_command(
    spec: Path = typer.Argument(..., help="Study spec (YAML): base, factors, mode, seeds."),
    out: Path = typer.Option(..., "--out", "-o", help="Study folder (store, runs, data, report)."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Parallel worker processes."),
    extend: bool = typer.Option(False, "--extend", help="Add the spec's new points to the study."),
    batched_seeds: bool = typer.Option(
        False, "--batched-seeds", help="Train all seeds of a point at once as one ensemble."
    ),
) -> None:
    """Run every pending run of SPEC in --out; finished runs are skipped, killed ones resumed."""
    outcome = run_study(
        spec, out, workers=workers, extend=extend, batched_seeds=batched_seeds, log=console.print
    )
    _print_counts(outcome.folder)
    console.print(f"{outcome.seconds:.1f} s; report with `cnnlab study report {outcome.folder}`")


@study_app.command("status")
def status_command(folder: Path = typer.Argument(..., help="Study folder.")) -> None:
    """How many runs are done, running, pending, diverged and failed, and the time left."""
    _print_counts(folder)


def _print_counts(folder: Path) -> None:
    store = open_existing(folder)
    try:
        counts, left = store.counts(), store.seconds_left()
        failed = store.runs(where="status = 'failed'")
    finally:
        store.close()
    table = Table(title=f"study {folder}")
    for status in (*STATUSES, "time left"):
        table.add_column(status, justify="right")
    shown_left = "-" if left is None else _duration(left)
    table.add_row(*(str(counts[status]) for status in STATUSES), shown_left)
    print_table(table)
    for record in failed:
        console.print(f"[red]failed[/] {record.point} seed {record.seed}: {record.error}")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
