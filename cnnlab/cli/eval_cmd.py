"""`cnnlab eval` scores a checkpoint on a dataset (`cnnlab.evaluate_checkpoint`: the run's own
test split as recorded, or other data's test split, else all of it) and reports;
`cnnlab predict` classifies files."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import torch
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cnnlab.cli import app, console, error_console, print_table
from cnnlab.engine.checkpoint import model_from_checkpoint
from cnnlab.engine.distributed import resolve_device
from cnnlab.engine.evaluate import EvalResult
from cnnlab.engine.evaluate_run import evaluate_checkpoint
from cnnlab.engine.metrics import most_confused
from cnnlab.engine.plots import plot_confusion
from cnnlab.engine.predict import FilePrediction, predict_files
from cnnlab.engine.predict_csv import (
    compile_id_pattern,
    default_columns,
    parse_columns,
    write_predictions_csv,
)
from cnnlab.errors import DataError, OptionError
from cnnlab.fileio import atomic_write

MAX_MATRIX_TABLE_CLASSES = 12  # larger confusion matrices print as their most confused pairs
CHECKPOINT_HELP = "A checkpoint file, or a run folder (its best.pt, else last.pt)."
DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda or mps."


@app.command("eval")
def eval_command(
    checkpoint: Path = typer.Argument(..., help=CHECKPOINT_HELP),
    data: str | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Dataset to score on, e.g. mnist, folder:PATH (default: the one it was trained on).",
    ),
    split: str | None = typer.Option(
        None,
        "--split",
        "-s",
        help="test, train or all. Default: on the run's own data (however its path is spelled), "
        "the split the run was tested on, as recorded in the checkpoint; on other data, its "
        "own test split if it has one, else every image.",
    ),
    batch_size: int = typer.Option(256, "--batch-size", "-b", min=1, help="Images per batch."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder for confusion.png and eval.json (default: the checkpoint's).",
    ),
    amp: bool = typer.Option(False, "--amp", help="Run the forward passes in mixed precision."),
    flip: bool | None = typer.Option(
        None,
        "--flip/--no-flip",
        help="Test-time flips: mean logits of each image and its mirror (default: as trained).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
) -> None:
    """Top-1/top-k accuracy, per-class accuracy and the confusion matrix on a split."""
    scored = evaluate_checkpoint(
        checkpoint, data, split, batch_size=batch_size, device=device, amp=amp, flip=flip
    )
    result, state, checkpoint_file = scored.result, scored.state, scored.checkpoint
    data, split = scored.data, scored.split

    out_dir = out if out is not None else checkpoint_file.parent
    report = {
        "checkpoint": str(checkpoint_file),
        "model": state["model_name"],
        "epoch": state.get("epoch"),
        "data": data,
        "split": split,
        "device": str(scored.device),
        "amp": amp,
        "test_time_flip": scored.flip,
        "versions": {"cnnlab": version("cnnlab"), "torch": torch.__version__},
        **result.to_dict(),
    }
    with atomic_write(out_dir / "eval.json", "w") as file:
        json.dump(report, file, indent=2)
    title = f"{state['model_name']} on {data} ({split}): top-1 accuracy {result.top1:.2%}"
    plot_confusion(result.confusion, result.classes, out_dir / "confusion.png", title=title)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    described = "all splits" if split == "all" else f"{split} split"
    print_table(
        _summary_table(result, state["model_name"], f"{data} ({described}", checkpoint_file)
    )
    print_table(_per_class_table(result))
    print_table(_confusion_table(result))
    console.print(f"wrote {out_dir / 'confusion.png'} and {out_dir / 'eval.json'}")


@app.command("predict")
def predict_command(
    checkpoint: Path = typer.Argument(..., help=f"{CHECKPOINT_HELP} Or an exported .onnx file."),
    paths: list[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    topk: int = typer.Option(5, "--topk", "-k", min=1, help="How many classes to show per file."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
    csv_out: Path | None = typer.Option(
        None, "--csv", help="Write one row per image to this CSV file instead of the table."
    ),
    id_pattern: str | None = typer.Option(
        None,
        "--id-pattern",
        help=r"A regex with one group that finds the CSV id in each file name, e.g. (\d+) "
        "(default: the file's stem).",
    ),
    columns: str | None = typer.Option(
        None,
        "--columns",
        help="The CSV columns: id, path, class, probability, a class name (its probability), "
        "HEADER=COLUMN to rename, e.g. id,label=dog (default: id, class, every class).",
    ),
) -> None:
    """The most probable classes of each image, with their probabilities.

    A file that cannot be read gets its own error line and the others go on. The exit code is
    0 when at least one file was classified and 2 when none was.
    """
    if csv_out is None and (id_pattern is not None or columns is not None):
        raise OptionError("--id-pattern and --columns shape the CSV file: add --csv PATH")
    if csv_out is not None and as_json:
        raise OptionError("--csv and --json both choose the output: give one of them")
    torch_device = resolve_device(device)
    if checkpoint.suffix.lower() == ".onnx":
        from cnnlab.deploy.export import load_onnx_model  # needs the onnx extra, only here

        model, state = load_onnx_model(checkpoint)
    else:
        model, state = model_from_checkpoint(checkpoint, device=torch_device)
    if csv_out is not None:
        _predict_to_csv(model, state, paths, csv_out, id_pattern, columns, torch_device)
        return
    predictions = predict_files(
        model,
        paths,
        mean=state["mean"],
        std=state["std"],
        image_shape=state["image_shape"],
        classes=state["classes"],
        topk=topk,
        device=torch_device,
    )
    classified = [prediction for prediction in predictions if prediction.error is None]
    if as_json:
        typer.echo(json.dumps([prediction.to_dict() for prediction in predictions], indent=2))
    elif classified:
        print_table(_prediction_table(classified, min(topk, len(state["classes"]))))
    for prediction in predictions:
        if prediction.error is not None and not as_json:
            error_console.print(
                f"[red]skipped:[/] {prediction.error}", highlight=False, soft_wrap=True
            )
    if not classified:
        raise DataError(f"none of the {len(predictions)} file(s) could be classified")


def _summary_table(result: EvalResult, model: str, data: str, checkpoint: Path) -> Table:
    """Model, checkpoint, data (`data` reads "SPEC (SPLIT"; the count closes it), accuracies."""
    table = Table(title="Evaluation", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows = [
        ("Model", model),
        ("Checkpoint", str(checkpoint)),
        ("Data", f"{data}, {result.count:,} images)"),
        ("Loss", f"{result.loss:.4f}"),
        ("Top-1 accuracy", f"{result.top1:.2%} (error {result.top1_error:.2%})"),
    ]
    if result.top_k is not None:  # top-5, or top-k below the class count; none for 2 classes
        k, accuracy = result.top_k
        rows.append((f"Top-{k} accuracy", f"{accuracy:.2%} (error {1 - accuracy:.2%})"))
    for row in rows:
        table.add_row(*row)
    return table


def _per_class_table(result: EvalResult) -> Table:
    table = Table(title="Per-class accuracy")
    table.add_column("Class")
    for column in ("Images", "Correct", "Accuracy"):
        table.add_column(column, justify="right")
    totals = result.confusion.sum(dim=1).tolist()
    correct = result.confusion.diagonal().tolist()
    for name, total, hits in zip(result.classes, totals, correct, strict=True):
        table.add_row(name, f"{total:,}", f"{hits:,}", f"{hits / total:.2%}" if total else "-")
    return table


def _confusion_table(result: EvalResult) -> Table:
    """The full matrix when it is small enough to read, else its most confused pairs."""
    matrix = result.confusion.tolist()
    if len(result.classes) > MAX_MATRIX_TABLE_CLASSES:
        table = Table(title="Most confused pairs (see confusion.png for the full matrix)")
        for column, justify in (
            ("True class", "left"),
            ("Predicted as", "left"),
            ("Images", "right"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for true, predicted, count in most_confused(result.confusion):
            table.add_row(result.classes[true], result.classes[predicted], f"{count:,}")
        return table
    table = Table(title="Confusion matrix")
    table.add_column("true \\ predicted", no_wrap=True)
    for index in range(len(result.classes)):
        table.add_column(str(index), justify="right")
    for index, (name, row) in enumerate(zip(result.classes, matrix, strict=True)):
        cells = [
            f"[bold green]{count:,}[/]"
            if column == index
            else (f"{count:,}" if count else "[dim]·[/]")
            for column, count in enumerate(row)
        ]
        table.add_row(_row_label(index, name), *cells)
    return table


def _row_label(index: int, name: str) -> str:
    """The class name, led by its column number unless the name starts with it (`0 - zero`)."""
    return name if name.split(" ", 1)[0] == str(index) else f"{index} {name}"


def _prediction_table(predictions: list[FilePrediction], topk: int) -> Table:
    """A row per file and a labelled column per rank: `#1` to `#topk` (at most the classes)."""
    table = Table(title=f"Top-{topk} predictions")
    table.add_column("File", overflow="fold")
    for rank in range(1, topk + 1):
        table.add_column(f"#{rank}")
    for prediction in predictions:
        ranked = zip(prediction.classes, prediction.probabilities, strict=True)
        cells = [f"{name} [dim]{probability:.1%}[/]" for name, probability in ranked]
        table.add_row(str(prediction.path), *cells)
    return table


def _predict_to_csv(
    model: torch.nn.Module,
    state: dict,
    paths: list[Path],
    out: Path,
    id_pattern: str | None,
    columns: str | None,
    device: torch.device,
) -> None:
    """Every class's probability for each image, written as the CSV rows `columns` names."""
    classes = list(state["classes"])
    chosen = parse_columns(columns or default_columns(classes), classes)
    pattern = compile_id_pattern(id_pattern) if id_pattern is not None else None
    with Progress(
        TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=error_console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("predict", total=None)
        predictions = predict_files(
            model,
            paths,
            mean=state["mean"],
            std=state["std"],
            image_shape=state["image_shape"],
            classes=classes,
            topk=len(classes),
            device=device,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    skipped = [prediction.error for prediction in predictions if prediction.error is not None]
    written = write_predictions_csv(out, predictions, chosen, pattern, on_skip=skipped.append)
    for reason in skipped:
        error_console.print(f"[red]skipped:[/] {reason}", highlight=False, soft_wrap=True)
    if not written:
        raise DataError(f"none of the {len(predictions)} file(s) could be written to {out}")
    console.print(f"wrote {written:,} rows to {out}")
