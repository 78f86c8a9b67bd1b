"""`cnnlab data stats`: class balance, original image sizes, pixel mean/std and unreadable files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer
from rich.table import Table

from cnnlab.cli import app, console, print_table
from cnnlab.data.cache import SkippedFileWarning
from cnnlab.data.datasets import load_dataset_details
from cnnlab.data.stats import DatasetStats, dataset_stats, plot_stats

data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_SPEC_HELP = (
    "mnist, fashion-mnist, cifar10 or cifar100 (optionally NAME:ROOT), mnist-5k, "
    "folder:PATH (one sub-folder per class) or dogs-vs-cats:PATH."
)


@data_app.command("stats")
def stats_command(
    dataset: str = typer.Argument(..., help=_SPEC_HELP),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write class_balance.png and image_sizes.png into this folder."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
    image_size: int | None = typer.Option(
        None, "--image-size", min=1, help="Resize to this square size, as training would."
    ),
    download: bool = typer.Option(False, "--download", help="Download a named dataset."),
) -> None:
    """Images per class and split, original sizes, exact per-channel mean/std, skipped files."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFileWarning)  # listed in the report instead
        details = load_dataset_details(dataset, image_size=image_size, download=download)
    stats = dataset_stats(details)
    plots = plot_stats(details, out) if out is not None else []
    if as_json:
        typer.echo(json.dumps({**stats.to_dict(), "plots": [str(p) for p in plots]}, indent=2))
        return
    print_table(_overview_table(stats))
    print_table(_size_table(stats))
    print_table(_class_table(stats))
    if stats.skipped_files:
        print_table(_skipped_table(stats))
    for path in plots:
        console.print(f"wrote {path}")


def _overview_table(stats: DatasetStats) -> Table:
    shape = "x".join(map(str, stats.image_shape))
    table = Table(title=f"{stats.dataset}: {len(stats.classes)} classes, loaded as {shape}")
    table.add_column("Split")
    table.add_column("Images", justify="right")
    table.add_column("Pixel mean", justify="right", no_wrap=True)
    table.add_column("Pixel std", justify="right", no_wrap=True)
    for name, split in stats.splits.items():
        table.add_row(name, f"{split.images:,}", _floats(split.mean), _floats(split.std))
    return table


def _size_table(stats: DatasetStats) -> Table:
    table = Table(title="Original image sizes (px)")
    for column in ("Split", "Side", "Min", "Median", "Max"):
        table.add_column(column, justify="left" if column in ("Split", "Side") else "right")
    for name, split in stats.splits.items():
        for side, spread in (("height", split.height), ("width", split.width)):
            table.add_row(name, side, *(f"{value:g}" for value in spread.values()))
    return table


def _class_table(stats: DatasetStats) -> Table:
    table = Table(title="Class balance")
    table.add_column("Class", overflow="fold")
    for name in stats.splits:
        table.add_column(name.capitalize(), justify="right")
        table.add_column("%", justify="right")
    for name in stats.classes:
        cells = []
        for split in stats.splits.values():
            count = split.class_counts[name]
            cells += [f"{count:,}", f"{100 * count / max(split.images, 1):.1f}"]
        table.add_row(name, *cells)
    return table


def _skipped_table(stats: DatasetStats) -> Table:
    table = Table(title=f"{len(stats.skipped_files)} unreadable files, skipped")
    table.add_column("File", overflow="fold")
    table.add_column("Reason", overflow="fold")
    for skipped in stats.skipped_files:
        table.add_row(skipped.path, skipped.reason)
    return table


def _floats(values: tuple[float, ...] | None) -> str:
    return "-" if values is None else " ".join(f"{value:.4f}" for value in values)
