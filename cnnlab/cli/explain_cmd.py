"""`cnnlab explain` draws where a checkpoint looks in image files (and checks the maps with
`--sanity`); `cnnlab features` draws what one of its layers sees, or its first filters."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from cnnlab.cli import app, console, error_console, print_table
from cnnlab.engine.checkpoint import model_from_checkpoint
from cnnlab.engine.distributed import resolve_device
from cnnlab.errors import OptionError
from cnnlab.explain.features import activation_heat, feature_maps, first_conv_filters
from cnnlab.explain.files import (
    ExplainedFiles,
    explain_files,
    explanation_figures,
    output_stems,
    parse_methods,
    write_figures,
)
from cnnlab.explain.inputs import ImageFiles, load_image_files
from cnnlab.explain.methods import METHODS
from cnnlab.explain.render import (
    feature_maps_figure,
    filters_figure,
    overlay_pixels,
    sanity_figure,
)
from cnnlab.explain.sanity import (
    SanityReport,
    sanity_checks,
    sanity_csv,
    sanity_markdown,
    sanity_rows,
)
from cnnlab.fileio import atomic_write_text

if TYPE_CHECKING:
    from cnnlab.explain.files import Drawing

CHECKPOINT_HELP = "A checkpoint file, or a run folder (its best.pt, else last.pt)."
DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda or mps."
SANITY_IMAGES = 16  # each randomization step explains every image again
FEATURE_IMAGES = 16  # feature-map grids drawn for a folder, at most
LAYER_HELP = "auto (the last feature block) or a module name such as layer4 or features.s4."
AT_INPUT_SIZE_HELP = (
    "Draw over the network's square input instead of each photo at its own size (longest "
    "side at most 1024 px), and write no STEM.*.overlay.png files."
)


@app.command("explain")
def explain_command(
    checkpoint: Path = typer.Argument(..., help=CHECKPOINT_HELP),
    images: list[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    method: list[str] = typer.Option(
        ["gradcam"], "--method", "-m", help=f"Repeatable or comma-separated: {', '.join(METHODS)}."
    ),
    layer: str = typer.Option("auto", "--layer", help=LAYER_HELP + " CAM family only."),
    target: str = typer.Option(
        "predicted", "--target", help="The class to explain: predicted, a class name or index."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the PNG figures."),
    sanity: bool = typer.Option(
        False, "--sanity", help="Also run model randomization and deletion/insertion checks."
    ),
    at_input_size: bool = typer.Option(False, "--at-input-size", help=AT_INPUT_SIZE_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Heat maps of where the network looks, over each photo at its own size: per image and
    method a figure and the bare overlay, and a grid comparing the methods when several are
    given."""
    methods = parse_methods(method)
    torch_device = resolve_device(device)
    model, state = model_from_checkpoint(checkpoint, device=torch_device)
    result = explain_files(
        model, state, images, methods, target=target, layer=layer, device=torch_device
    )
    _print_notes(result.images)
    report = None
    if sanity:
        explained = next(iter(result.explanations.values())).targets[:SANITY_IMAGES]
        inputs = result.images.inputs[:SANITY_IMAGES]
        if len(result.images.inputs) > SANITY_IMAGES:
            console.print(f"[yellow]note:[/] --sanity checks the first {SANITY_IMAGES} images")
        report = sanity_checks(model, inputs, methods, explained, layer)
    figures = explanation_figures(result, at_input_size=at_input_size)
    if report is not None:
        figures = itertools.chain(figures, [("sanity.png", sanity_figure(report))])
    written = write_figures(figures, out)
    if report is not None:
        atomic_write_text(out / "sanity.md", sanity_markdown(report))
        atomic_write_text(out / "sanity.csv", sanity_csv(report))
        written += [out / "sanity.md", out / "sanity.csv"]
    print_table(_explained_table(result))
    if report is not None:
        for table in _sanity_tables(report, methods):
            print_table(table)
    console.print(f"wrote {len(written)} files into {out}")


@app.command("features")
def features_command(
    checkpoint: Path = typer.Argument(..., help=CHECKPOINT_HELP),
    image: Path | None = typer.Argument(
        None,
        help=f"The image, or a folder of images (the first {FEATURE_IMAGES}, by path), whose "
        "feature maps to draw: one grid per image.",
    ),
    layer: str | None = typer.Option(None, "--layer", help=LAYER_HELP),
    filters: bool = typer.Option(False, "--filters", help="Draw the first convolution's filters."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the PNG figures."),
    at_input_size: bool = typer.Option(False, "--at-input-size", help=AT_INPUT_SIZE_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """A grid of one layer's feature maps per image with their mean over the photo at its own
    size, and/or the first layer's filters."""
    if layer is None and not filters:
        raise OptionError("give --layer NAME (with an IMAGE) to draw feature maps, or --filters")
    if layer is not None and image is None:
        raise OptionError("--layer draws the feature maps of an image; give the IMAGE too")
    torch_device = resolve_device(device)
    model, state = model_from_checkpoint(checkpoint, device=torch_device)
    figures: dict[str, Drawing] = {}
    if layer is not None and image is not None:
        files = load_image_files([image], state, torch_device, limit=FEATURE_IMAGES)
        _print_notes(files)
        if files.unread:
            console.print(
                f"[yellow]note:[/] {files.unread} more file(s) in {image} not drawn: at most "
                f"{FEATURE_IMAGES} images are drawn, the first by path",
                highlight=False,
                soft_wrap=True,
            )
        for index, stem in enumerate(output_stems(files.paths)):
            name, maps = feature_maps(model, files.inputs[index : index + 1], layer)
            title = f"{state['model_name']} {name}\n{files.paths[index].name}: {len(maps)} maps"
            figures[f"{stem}.{name}.png"] = feature_maps_figure(maps, title)
            if not at_input_size:
                heat = activation_heat(maps)
                figures[f"{stem}.{name}.overlay.png"] = overlay_pixels(files.backdrop(index), heat)
    if filters:
        name, weight = first_conv_filters(model)
        size = "x".join(map(str, weight.shape[2:]))
        title = f"{state['model_name']} {name}\n{weight.shape[0]} filters of {size}"
        figures["filters.png"] = filters_figure(weight, title)
    for path in write_figures(figures.items(), out):
        console.print(f"wrote {path}")


def _print_notes(files: ImageFiles) -> None:
    """A red line per skipped file (on stderr, as `predict` does), a yellow one per note."""
    for problem in files.skipped:
        error_console.print(f"[red]skipped:[/] {problem}", highlight=False, soft_wrap=True)
    for note in files.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)


def _explained_table(result: ExplainedFiles) -> Table:
    table = Table(title="Explained")
    for column in ("File", "Predicted", "Explained", "Layer"):
        table.add_column(column, overflow="fold")
    explanation = next(iter(result.explanations.values()))
    layers = ", ".join(dict.fromkeys(e.layer for e in result.explanations.values()))
    for index, path in enumerate(result.images.paths):
        probabilities = explanation.probabilities[index]
        predicted, explained = int(probabilities.argmax()), explanation.targets[index]
        table.add_row(
            str(path),
            f"{result.classes[predicted]} [dim]{probabilities[predicted]:.1%}[/]",
            f"{result.classes[explained]} [dim]{probabilities[explained]:.1%}[/]",
            layers,
        )
    return table


def _sanity_tables(report: SanityReport, methods: list[str]) -> list[Table]:
    randomization_rows, area_rows = sanity_rows(report)
    randomization = Table(title="Model randomization: rank correlation with the trained maps")
    for column in ("Step", "Re-initialized", *methods):
        randomization.add_column(column, justify="left" if column == "Re-initialized" else "right")
    for row in randomization_rows:
        randomization.add_row(*row)
    areas = Table(title="Deletion / insertion: area under the class-probability curve")
    for column in ("Pixel order", "Deletion (lower is better)", "Insertion (higher is better)"):
        areas.add_column(column, justify="left" if column == "Pixel order" else "right")
    for row in area_rows:
        areas.add_row(*row)
    return [randomization, areas]
