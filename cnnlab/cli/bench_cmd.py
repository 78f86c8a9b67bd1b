"""`cnnlab bench`: training and inference speed of models, beside torchvision's same networks."""

from __future__ import annotations

import json

import torch
import typer
from rich.table import Table

from cnnlab.benchmark import BenchResult, BenchSettings, matmul_peak_flops, run_benchmark
from cnnlab.cli import app, console, print_table
from cnnlab.cli.options import parse_input_size
from cnnlab.engine.distributed import resolve_device
from cnnlab.errors import OptionError


@app.command("bench")
def bench_command(
    models: str = typer.Option("resnet18", "--models", "-m", help="Comma-separated model names."),
    batch_sizes: str = typer.Option(
        "32", "--batch-sizes", "-b", help="Comma-separated, e.g. 16,64."
    ),
    input_size: str | None = typer.Option(
        None, "--input", "-i", help="Input size CxHxW, e.g. 3x64x64 (default: each model's)."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    amp: bool = typer.Option(False, "--amp", help="bf16 autocast."),
    channels_last: bool = typer.Option(
        False, "--channels-last", help="Channels-last memory format."
    ),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile both sides."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed rounds per measurement."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
) -> None:
    """Images/s (train and inference), peak memory and FLOP/s; ratio to torchvision's models."""
    names = [name.strip() for name in models.split(",") if name.strip()]
    sizes = _parse_batch_sizes(batch_sizes)
    shape = parse_input_size(input_size) if input_size else None
    settings = BenchSettings(device, amp, channels_last, compile_model, repeats)
    results = run_benchmark(names, sizes, settings, shape)
    dtype = torch.bfloat16 if amp else torch.float32
    peak = matmul_peak_flops(resolve_device(device), dtype)
    if as_json:
        payload = {
            "settings": {**settings.__dict__, "threads": torch.get_num_threads()},
            "matmul_peak_flops": peak,
            "results": [row.to_dict() for row in results],
            "ratios": _ratios(results),
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    print_table(_table(results, peak))
    console.print(
        f"device matmul peak {peak / 1e9:.1f} GFLOP/s ({'bf16' if amp else 'fp32'}); "
        f"{torch.get_num_threads()} CPU threads; ratio = cnnlab images/s / torchvision's",
        highlight=False,
        soft_wrap=True,
    )


def _parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise OptionError(
            f"batch sizes '{text}' must be comma-separated integers, e.g. 16,64"
        ) from None
    if not sizes or min(sizes) < 1:
        raise OptionError(f"batch sizes '{text}' must be positive integers, e.g. 16,64")
    return sizes


def _ratios(results: list[BenchResult]) -> list[dict]:
    """cnnlab's rates over torchvision's, for each model and batch size timed on both sides."""
    pairs: dict[tuple[str, int], dict[str, BenchResult]] = {}
    for row in results:
        pairs.setdefault((row.model, row.batch_size), {})[row.source] = row
    ratios = []
    for (model, batch_size), sides in pairs.items():
        ours, theirs = sides.get("cnnlab"), sides.get("torchvision")
        if ours is None or theirs is None or ours.error or theirs.error:
            continue
        ratios.append(
            {
                "model": model,
                "batch_size": batch_size,
                "train": ours.train_images_per_sec / theirs.train_images_per_sec,
                "infer": ours.infer_images_per_sec / theirs.infer_images_per_sec,
            }
        )
    return ratios


def _table(results: list[BenchResult], peak: float) -> Table:
    ratios = {(r["model"], r["batch_size"]): r for r in _ratios(results)}
    table = Table(title="cnnlab bench")
    for column in ("Model", "Source", "Batch", "Input"):
        table.add_column(column, no_wrap=True)
    for column in ("Train img/s", "Infer img/s", "Train GFLOP/s", "% peak", "Peak mem", "Ratio"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in results:
        shape = "x".join(map(str, row.input_size))
        if row.error:
            table.add_row(row.model, row.source, str(row.batch_size), shape, f"[red]{row.error}")
            continue
        ratio = ratios.get((row.model, row.batch_size))
        shown_ratio = (
            f"{ratio['train']:.2f} / {ratio['infer']:.2f}"
            if ratio and row.source == "cnnlab"
            else ""
        )
        memory = (
            "n/a" if row.peak_memory_bytes is None else f"{row.peak_memory_bytes / 2**20:.0f} MiB"
        )
        table.add_row(
            row.model,
            row.source,
            str(row.batch_size),
            shape,
            f"{row.train_images_per_sec:.1f}",
            f"{row.infer_images_per_sec:.1f}",
            f"{row.train_flops_per_sec / 1e9:.1f}",
            f"{100 * row.train_flops_per_sec / peak:.0f}%",
            memory,
            shown_ratio,
        )
    return table
