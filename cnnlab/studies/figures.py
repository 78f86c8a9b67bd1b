"""A study report's figures, as PNG files: values against a factor, learning curves, a heat map.

Each panel shows means with ±1 sample std over seeds (no bar where one run gives no spread);
the learning rate and the batch size get a log axis.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cnnlab.engine.plots import _style, new_figure, save_figure
from cnnlab.studies.results import Summary

LOG_AXIS_FACTORS = ("lr", "batch_size", "weight_decay")


def _positions(rows: list[Summary]) -> tuple[list[float], bool]:
    """x positions: the values themselves when numeric, else 0, 1, 2, ... (categories)."""
    values = [row.value for row in rows]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    return ([float(v) for v in values] if numeric else list(range(len(values)))), numeric


def _spread(std: float) -> float:
    return 0.0 if math.isnan(std) else std


def plot_factor(
    factor: str, rows: list[Summary], path: Path, names: dict[str, str], title: str
) -> Path:
    """One panel per metric (titled from `names`): mean ± std against the factor's value."""
    figure = new_figure(4.0 * len(names), 3.2)
    x, numeric = _positions(rows)
    for axes, (key, name) in zip(figure.subplots(1, len(names)), names.items(), strict=True):
        means = [row.metrics[key].mean for row in rows]
        stds = [_spread(row.metrics[key].std) for row in rows]
        axes.errorbar(x, means, yerr=stds, marker="o", capsize=4, linewidth=1.2)
        for position, row in zip(x, rows, strict=True):
            if row.diverged:
                axes.annotate(
                    f"{row.diverged} diverged",
                    (position, 0),
                    xycoords=("data", "axes fraction"),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="#d62728",
                )
        if numeric and factor in LOG_AXIS_FACTORS and min(x) > 0:
            axes.set_xscale("log", base=2 if factor == "batch_size" else 10)
        # Tick at each value, labelled as the spec writes it (also on a log axis).
        axes.set_xticks(x, [row.label.replace(" (base)", "*") for row in rows])
        axes.minorticks_off()
        axes.set_xlabel(factor)
        axes.set_title(name)
        _style(axes)
    figure.suptitle(f"{title} (* = base)")
    return save_figure(figure, path)


def plot_curves(factor: str, rows: list[Summary], path: Path, names: dict[str, str]) -> Path:
    """Mean learning curves per value (training loss, scored accuracy) with a ±1 std band."""
    figure = new_figure(9.0, 3.4)
    for axes, key in zip(figure.subplots(1, 2), ("train_loss", "scored_acc"), strict=True):
        for row in rows:
            curve = row.curves[key]
            if not curve:
                continue
            epochs = list(range(1, len(curve) + 1))
            means = [stat.mean for stat in curve]
            low = [stat.mean - _spread(stat.std) for stat in curve]
            high = [stat.mean + _spread(stat.std) for stat in curve]
            (line,) = axes.plot(
                epochs,
                means,
                marker="o" if len(epochs) < 30 else None,
                markersize=3,
                label=row.label,
            )
            axes.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15)
        axes.set_xlabel("epoch")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.set_title(names[key] if key != "train_loss" else "training loss")
        _style(axes)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, title=factor, loc="outside right", fontsize=8)
    figure.suptitle(f"{factor}: mean learning curves, band = ±1 std over seeds")
    return save_figure(figure, path)


def plot_heat_map(
    factors: tuple[str, str],
    values: tuple[list, list],
    cells: list[Summary],
    path: Path,
    name: str,
) -> Path:
    """A two-factor grid: each cell's mean scored accuracy, written with its std and n."""
    rows, columns = values
    means = np.full((len(rows), len(columns)), np.nan)
    texts = {}
    for cell in cells:
        i = _index(rows, cell.value[factors[0]])
        j = _index(columns, cell.value[factors[1]])
        stat = cell.metrics["scored_acc"]
        if i is None or j is None or not stat.n:
            continue
        means[i, j] = stat.mean
        spread = "" if stat.n == 1 else f"\n± {stat.std:.3f}"
        texts[i, j] = f"{stat.mean:.3f}{spread}\nn = {stat.n}"
    figure = new_figure(1.4 * len(columns) + 2.5, 0.9 * len(rows) + 1.8)
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(means), cmap="viridis", aspect="auto")
    for (i, j), text in texts.items():
        bright = image.norm(means[i, j]) > 0.5  # viridis runs from dark blue to yellow
        color = "black" if bright else "white"
        axes.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    axes.set_xticks(range(len(columns)), [_text(v) for v in columns])
    axes.set_yticks(range(len(rows)), [_text(v) for v in rows])
    axes.set_xlabel(factors[1])
    axes.set_ylabel(factors[0])
    figure.colorbar(image, ax=axes, label=f"mean {name}")
    axes.set_title(f"{name}: every combination, mean ± std over seeds")
    return save_figure(figure, path)


def _index(values: list, value: object) -> int | None:
    return next((i for i, v in enumerate(values) if v == value), None)


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)
