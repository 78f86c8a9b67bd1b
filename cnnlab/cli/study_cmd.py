"""`cnnlab study`: run an ablation study, watch it, report it, check its best combination."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cnnlab.cli import app, console, print_table
from cnnlab.compare import (
    is_comparison,
    report_title,
    stored_records,
    summarize_results,
)
from cnnlab.compare import write_report as write_comparison_report
from cnnlab.compare.report import markdown_table
from cnnlab.reporting import Table as ReportTable
from cnnlab.studies.best import NothingBeatsTheBase, run_best
from cnnlab.studies.progress import clock
from cnnlab.studies.report import (
    REPORT_FOLDER,
    best_table,
    factor_table,
    grid_table,
    reference_table,
    write_report,
)
from cnnlab.studies.results import load_results
from cnnlab.studies.runner import ray_options, run_study
from cnnlab.studies.store import COMPARISON_KEY, FINISHED, open_existing

THREADS_HELP = (
    "CPU threads per worker (default: OMP_NUM_THREADS when set, else the cores / --workers)."
)

RAY_HELP = (
    "Run each run as a Ray task: alone, a local Ray instance; auto, the cluster `ray start` made"
    " here; HOST:PORT, that cluster's head (pip install 'cnnlab[ray]'). With --ray, --threads is"
    " the CPUs each run gets (default 1)."
)
STORAGE_HELP = "With --ray: the folder for run folders and data that every node can read."
GPUS_HELP = "With --ray: the GPUs (or fraction of one) each run asks for."

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
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    ray: str | None = typer.Option(None, "--ray", metavar="[ADDRESS]", help=RAY_HELP),
    storage: Path | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    ray_gpus: float | None = typer.Option(None, "--ray-gpus-per-run", help=GPUS_HELP),
) -> None:
    """Run every pending run of SPEC in --out; finished runs are skipped, killed ones resumed."""
    outcome = run_study(
        spec,
        out,
        workers=workers,
        extend=extend,
        batched_seeds=batched_seeds,
        threads=threads,
        ray=ray_options(ray, storage, ray_gpus),
        log=console.print,
    )
    _print_counts(outcome.folder)
    console.print(f"{outcome.seconds:.1f} s; report with `cnnlab study report {outcome.folder}`")


@study_app.command("status")
def status_command(folder: Path = typer.Argument(..., help="Study folder.")) -> None:
    """How many runs are done, running, pending, diverged and failed, and the time left."""
    _print_counts(folder)


@study_app.command("report")
def report_command(folder: Path = typer.Argument(..., help="Study folder.")) -> None:
    """Tables, figures and the best values, as Markdown + PNGs and one offline HTML page.

    A `cnnlab compare` folder gets its comparison report, rebuilt from its store."""
    if is_comparison(folder):
        _report_comparison(folder)
        return
    page = write_report(folder)
    results = load_results(folder)
    if results.grid:
        _print_rich(grid_table(results))
    else:
        for factor, rows in results.factors.items():
            _print_rich(factor_table(factor, rows, results.split))
    _print_rich(best_table(results))
    if results.spec.get("reference"):
        table, count = reference_table(results)
        _print_rich(table)
        console.print(f"{count}.")
    console.print(f"wrote {page.parent / 'report.md'} and {page}")


@study_app.command("best")
def best_command(
    folder: Path = typer.Argument(..., help="Study folder."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Parallel worker processes."),
) -> None:
    """Train the combination of the values significantly better than the base, against the base:
    with the study's seeds, or (a study with `validation`) on the full training split and the
    test split, fresh seeds."""
    try:
        table = run_best(folder, workers=workers, log=console.print)
    except NothingBeatsTheBase as outcome:
        console.print(f"{outcome}; nothing to combine", highlight=False, soft_wrap=True)
        return
    _print_rich(table)
    console.print(f"report updated: {folder / REPORT_FOLDER / 'report.html'}")


def _report_comparison(folder: Path) -> None:
    records, settings = stored_records(folder)
    rows = summarize_results(records)
    if not rows:
        console.print(f"{folder}: no run has finished yet")
        return
    paths = write_comparison_report(rows, folder, title=report_title(len(rows), settings["base"]))
    console.print(markdown_table(rows), highlight=False, soft_wrap=True)
    console.print(f"report: {paths['html']}", highlight=False, soft_wrap=True)


def _print_rich(table: ReportTable) -> None:
    shown = Table(title=table.title, title_justify="left")
    for index, column in enumerate(table.columns):
        shown.add_column(column, justify="left" if index == 0 else "right")
    for row in table.rows:
        shown.add_row(*row)
    print_table(shown)


def _print_counts(folder: Path) -> None:
    store = open_existing(folder, comparison=True)
    try:
        counts, left = store.counts(stale=True), store.seconds_left()
        stale_holders = store.stale_holders()
        failed = store.runs(where="status = 'failed'")
        comparison = store.get_meta(COMPARISON_KEY) is not None
    finally:
        store.close()
    order = ("pending", "running", "stale", *FINISHED)
    shown = [status for status in order if status != "stale" or counts["stale"]]
    table = Table(title=f"study {folder}")
    for status in (*shown, "time left"):
        table.add_column(status, justify="right")
    shown_left = "-" if left is None else clock(left)
    table.add_row(*(str(counts[status]) for status in shown), shown_left)
    print_table(table)
    if counts["stale"]:
        command = "cnnlab compare" if comparison else "cnnlab study run"
        console.print(
            f"[yellow]stale[/] {counts['stale']} run(s) marked running by a runner that is gone "
            f"({', '.join(stale_holders)}: process exited or lease expired); the same "
            f"`{command} ... --out {folder}` resumes them from their last.pt",
            highlight=False,
            soft_wrap=True,
        )
    for record in failed:
        console.print(f"[red]failed[/] {record.point} seed {record.seed}: {record.error}")
