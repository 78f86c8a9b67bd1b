"""`cnnlab models` lists the model zoo; `cnnlab summary` shows one model's layers and costs."""

from __future__ import annotations

import json
import math

import torch
import typer
from rich.table import Table

from cnnlab.cli import app, print_table
from cnnlab.cli.options import parse_input_size, parse_options
from cnnlab.errors import UnknownNameError
from cnnlab.models import count_parameters, create_model, list_models, model_info
from cnnlab.summary import ModelSummary, summarize
from cnnlab.weights import weights_for_model

_GLOB_CHARACTERS = set("*?[")


@app.command("models")
def models_command(
    pattern: str = typer.Argument(
        "*", help="Filter: a shell pattern ('resnet*') or, without wildcards, a substring."
    ),
) -> None:
    """List the registered models; an exact model name also shows its options."""
    names = list_models(pattern if _GLOB_CHARACTERS & set(pattern) else f"*{pattern}*")
    if not names:
        raise UnknownNameError("model pattern", pattern, list_models())
    table = Table(title=f"{len(names)} model{'' if len(names) == 1 else 's'}")
    table.add_column("Model", no_wrap=True)
    table.add_column("Params", justify="right", no_wrap=True)
    table.add_column("Input", no_wrap=True)
    table.add_column("Weights", no_wrap=True)
    table.add_column("Description")
    table.add_column("Paper")
    for name in names:
        info = model_info(name)
        table.add_row(
            name,
            _si(count_parameters(name)),
            "x".join(map(str, info.input_size)),
            ", ".join(weights_for_model(name)),
            info.description,
            info.paper,
        )
    print_table(table)
    if pattern in names:
        print_table(_options_table(pattern))
        print_table(_stages_table(pattern))


def _options_table(name: str) -> Table:
    """Each option of model `name`: its default and what it changes."""
    table = Table(title=f"{name} options (--model-opt key=value)")
    table.add_column("Option", no_wrap=True)
    table.add_column("Default", no_wrap=True)
    table.add_column("Meaning")
    for option_name, option in model_info(name).options.items():
        table.add_row(option_name, repr(option.default), option.help)
    return table


def _stages_table(name: str) -> Table:
    """The stages `cnnlab transfer --mode last:K` counts from the end, with their sizes."""
    with torch.device("meta"):
        stages = create_model(name).named_stages()
    table = Table(title=f"{name} stages (transfer --mode last:K)")
    table.add_column("K", justify="right")
    table.add_column("Stage", no_wrap=True)
    table.add_column("Params", justify="right")
    for k, (stage, module) in zip(range(len(stages), 0, -1), stages, strict=True):
        table.add_row(str(k), stage, _si(sum(p.numel() for p in module.parameters())))
    return table


@app.command("summary")
def summary_command(
    model: str = typer.Argument(..., help="A registered model name (see `cnnlab models`)."),
    input_size: str | None = typer.Option(
        None, "--input", "-i", help="Input size CxHxW, e.g. 3x224x224 (default: the model's)."
    ),
    batch_size: int = typer.Option(
        1, "--batch-size", "-b", min=1, help="Batch size for the training-memory estimate."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
    model_opt: list[str] | None = typer.Option(
        None, "--model-opt", help="A model option key=value, e.g. num_classes=10 (repeatable)."
    ),
) -> None:
    """Per-layer output shapes, parameters, MACs and activations, with totals and memory."""
    options = parse_options(model_opt or ())
    if input_size:
        shape = parse_input_size(input_size)
    else:  # the model's default size, with the channels asked for
        channels, height, width = model_info(model).input_size
        requested = options.get("in_channels")
        shape = (requested if isinstance(requested, int) else channels, height, width)
    summary = summarize(model, shape, batch_size=batch_size, **options)
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        print_table(_layer_table(summary))
        print_table(_totals_table(summary))


def _layer_table(summary: ModelSummary) -> Table:
    table = Table(title=f"{summary.model} at {'x'.join(map(str, summary.input_size))}")
    table.add_column("Layer", overflow="fold")
    table.add_column("Type", overflow="ellipsis", no_wrap=True)
    for column in ("Output (H×W×C)", "Params", "MACs", "Activations"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_row(
        "(input)", "", _shape(summary.input_size), "", "", f"{math.prod(summary.input_size):,}"
    )
    for layer in summary.layers:
        table.add_row(
            layer.name,
            layer.type,
            _shape(layer.output_shape),
            f"{layer.params:,}" if layer.params else "",
            _si(layer.macs) if layer.macs else "",
            f"{layer.activations:,}" if layer.activations else "",
        )
    return table


def _totals_table(summary: ModelSummary) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    trainable = (
        "all trainable"
        if summary.trainable_params == summary.params
        else (f"{_si(summary.trainable_params)} trainable")
    )
    table.add_row(
        "Parameters", f"{_si(summary.params)} ({trainable}), {_si(summary.param_bytes, 'B')}"
    )
    table.add_row(
        "Compute", f"{_si(summary.macs, 'MACs')} ({_si(summary.flops, 'FLOPs')}) per image"
    )
    table.add_row(
        "Activations",
        f"{_si(summary.activations)} values, {_si(summary.activation_bytes, 'B')} per image",
    )
    table.add_row(
        "Training memory",
        f"~{_si(summary.training_memory_bytes(), 'B')} at batch {summary.batch_size} "
        "(weights, gradients, SGD momentum, saved activations; float32)",
    )
    return table


def _shape(shape: tuple[int, ...]) -> str:
    """Channels last, as the papers write it: (96, 55, 55) -> 55×55×96; (4096,) -> 4096."""
    return "×".join(map(str, (*shape[1:], shape[0]))) if shape else "-"


def _si(value: float, unit: str = "") -> str:
    """Decimal prefixes: (138357544,) -> '138.36 M', (15470264320, 'MACs') -> '15.47 GMACs'."""
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}".rstrip()
