"""`cnnlab compare`: train several architectures on one dataset; one table, plots and a page."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnlab.cli import app, console
from cnnlab.cli.study_cmd import GPUS_HELP, RAY_HELP, STORAGE_HELP, THREADS_HELP
from cnnlab.compare import CompareSpec, report_title, run_compare, summarize_results, write_report
from cnnlab.compare.report import markdown_table
from cnnlab.studies.runner import ray_options


@app.command("compare")
def compare_command(
    models: str = typer.Option(..., "--models", "-m", help="Comma-separated model names."),
    data: str = typer.Option(
        ..., "--data", "-d", help="Dataset spec, e.g. folder:PATH or cifar10."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", "-e", min=1, help="Epochs for every model (default 10)."
    ),
    time_budget: str | None = typer.Option(
        None, "--time-budget", help="The same wall-clock budget for every run, e.g. 10m."
    ),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Runs per model (seeds 0..S-1)."),
    out: str = typer.Option(
        "compare", "--out", "-o", help="Folder for the store, runs, data, table and plots."
    ),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Parallel worker processes."),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    ray: str | None = typer.Option(None, "--ray", metavar="[ADDRESS]", help=RAY_HELP),
    storage: Path | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    ray_gpus: float | None = typer.Option(None, "--ray-gpus-per-run", help=GPUS_HELP),
    image_size: int | None = typer.Option(
        None, "--image-size", min=1, help="Resize the images once, at load time."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per finished run."),
) -> None:
    """Train each model with a recipe suited to it; report error, size, cost and time.

    Finished runs in --out are skipped and killed ones resumed, as in `cnnlab study run`.
    """
    spec = CompareSpec(
        models=[name.strip() for name in models.split(",") if name.strip()],
        data=data,
        epochs=epochs,
        time_budget=time_budget,
        seeds=seeds,
        out=out,
        image_size=image_size,
        device=device,
    )
    records = run_compare(
        spec,
        workers=workers,
        threads=threads,
        ray=ray_options(ray, storage, ray_gpus),
        progress=not quiet,
        on_message=console.print,
    )
    rows = summarize_results(records)
    if not rows:
        console.print("no model could be trained on this data")
        return
    paths = write_report(rows, out, title=report_title(len(rows), spec.base_config().to_dict()))
    console.print(markdown_table(rows), highlight=False, soft_wrap=True)
    console.print(f"report: {paths['html']}", highlight=False, soft_wrap=True)
