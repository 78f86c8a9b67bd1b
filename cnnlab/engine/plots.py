"""Figures of a run: training curves and confusion matrices, written as PNG (or SVG/PDF) files.

Figures are built on matplotlib's object API with the Agg canvas, never through pyplot, so
plotting holds no global state, needs no display and is safe from worker threads. Files are
written atomically: a crash never leaves half a PNG behind. matplotlib is imported on first
use, so importing cnnlab (and starting its command line) does not pay for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from cnnlab.errors import DataError
from cnnlab.fileio import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

TRAIN_COLOR, TEST_COLOR, DIVERGED_COLOR = "#1f77b4", "#ff7f0e", "#d62728"
MAX_MARKED_EPOCHS = 30  # beyond this, markers on every epoch clutter the lines
MAX_ANNOTATED_CLASSES = 20  # counts are written in the cells of matrices up to this size
MAX_LABELLED_CLASSES = 50  # beyond this, only every n-th class is named on the axes
MAX_UNROTATED_LABEL_CHARS = 40  # longer rows of class names on the x axis are slanted


def plot_curves(history: list[dict], path: str | Path, *, title: str | None = None) -> Path:
    """Loss (left) and accuracy (right) against epochs, d2l's classic training plot.

    `history` holds one dict per epoch with any of `train_loss`, `test_loss`, `train_acc`,
    `test_acc`, `test_top5` (accuracies as fractions) and optionally `epoch` and `status`; an
    epoch whose status is `diverged` is marked on both panels.
    """
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    if not history:
        raise DataError("no epochs to plot: the training history is empty")
    epochs = [row.get("epoch", number) for number, row in enumerate(history, start=1)]
    figure = new_figure(10, 4)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    marker = "o" if len(history) <= MAX_MARKED_EPOCHS else None
    curves = (
        (loss_axes, "train_loss", "train loss", TRAIN_COLOR, "-"),
        (loss_axes, "test_loss", "test loss", TEST_COLOR, "--"),
        (accuracy_axes, "train_acc", "train acc", TRAIN_COLOR, "-"),
        (accuracy_axes, "test_acc", "test acc", TEST_COLOR, "-"),
        (accuracy_axes, "test_top5", "test top-5 acc", TEST_COLOR, ":"),
    )
    for axes, key, label, color, style in curves:
        values = [_finite(row.get(key)) for row in history]
        if all(math.isnan(value) for value in values):
            continue
        last = next(value for value in reversed(values) if not math.isnan(value))
        shown = f"{last:.4f}" if key.endswith("loss") else f"{last:.2%}"
        axes.plot(epochs, values, style, color=color, marker=marker, markersize=3.5)
        axes.lines[-1].set_label(f"{label} ({shown})")
    for epoch, row in zip(epochs, history, strict=True):
        if row.get("status") == "diverged":
            for axes in (loss_axes, accuracy_axes):
                axes.axvline(epoch, color=DIVERGED_COLOR, linestyle="--", linewidth=1.2)
                axes.lines[-1].set_label(f"diverged (epoch {epoch})")
    loss_axes.set(xlabel="epoch", ylabel="loss", title="loss")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.0))
    accuracy_axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    for axes in (loss_axes, accuracy_axes):
        _style(axes)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if axes.lines:
            axes.legend(frameon=False, fontsize=9)
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def plot_confusion(
    matrix: torch.Tensor | Sequence[Sequence[int]],
    classes: Sequence[str],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """A heat map of `matrix` (rows: true class, columns: predicted class).

    Colours show each row normalized to the fraction of its true class, so rare classes are as
    readable as common ones; small matrices also show the raw counts in their cells.
    """
    from matplotlib.ticker import PercentFormatter

    counts = torch.as_tensor(matrix, dtype=torch.int64).numpy()
    size = len(classes)
    if size == 0 or counts.shape != (size, size):
        raise DataError(
            f"a confusion matrix for {size} classes must be {size}x{size}, got {counts.shape}"
        )
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    side = min(max(0.45 * size + 3.0, 5.0), 18.0)
    figure = new_figure(side + 1.2, side)
    axes = figure.subplots()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    colorbar = figure.colorbar(image, ax=axes, shrink=0.8, format=PercentFormatter(xmax=1.0))
    colorbar.set_label("share of the true class")
    step = math.ceil(size / MAX_LABELLED_CLASSES)
    ticks = np.arange(0, size, step)
    axes.set_xticks(ticks, [classes[i] for i in ticks])
    if max(len(name) for name in classes) * len(ticks) > MAX_UNROTATED_LABEL_CHARS:
        for label in axes.get_xticklabels():
            label.set(rotation=45, horizontalalignment="right", rotation_mode="anchor")
    axes.set_yticks(ticks, [classes[i] for i in ticks])
    axes.set(xlabel="predicted class", ylabel="true class")
    if size <= MAX_ANNOTATED_CLASSES:
        _annotate_counts(axes, counts, fractions)
    total = int(counts.sum())
    accuracy = np.trace(counts) / total if total else float("nan")
    axes.set_title(title or f"confusion matrix: {total:,} images, accuracy {accuracy:.2%}")
    return save_figure(figure, path)


def _annotate_counts(axes: Axes, counts: np.ndarray, fractions: np.ndarray) -> None:
    """Write each count in its cell, white on dark cells; empty cells stay blank."""
    size = len(counts)
    font_size = max(6.0, 12.0 - 0.3 * size)
    for row in range(size):
        for column in range(size):
            if counts[row, column] == 0:
                continue
            color = "white" if fractions[row, column] > 0.55 else "#202020"
            axes.text(
                column,
                row,
                f"{counts[row, column]:,}",
                ha="center",
                va="center",
                color=color,
                fontsize=font_size,
            )


def _finite(value: object) -> float:
    """The value as a float, NaN when missing or not finite (matplotlib leaves a gap)."""
    if value is None:
        return math.nan
    number = float(value)
    return number if math.isfinite(number) else math.nan


def _style(axes: Axes) -> None:
    axes.grid(True, alpha=0.3, linewidth=0.6)
    axes.spines[["top", "right"]].set_visible(False)


def new_figure(width: float, height: float) -> Figure:
    """An empty figure on the Agg canvas (inches), laid out to fit its labels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Render `figure` into `path` atomically; the format follows the suffix."""
    path = Path(path)
    with atomic_write(path) as file:
        figure.savefig(file, format=path.suffix.lstrip(".").lower() or "png", dpi=150)
    return path
