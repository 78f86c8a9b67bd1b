"""Figures of explanations: a map over its image, methods side by side, feature maps, filters.

Built on matplotlib's object API with the Agg canvas (`engine.plots.new_figure`); the caller
saves them with `engine.plots.save_figure` (atomic) once everything has been computed.
`overlay_pixels` is the one place a map is laid over an image, for figures and for the bare
overlay PNGs alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from cnnlab.engine.plots import new_figure
from cnnlab.explain.methods import upsample

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure

    from cnnlab.explain.sanity import SanityReport

HEAT_COLORMAP = "jet"
HEAT_ALPHA = 0.5
PANEL_INCHES = 2.6
MAX_FEATURE_MAPS = 64
MIN_GRID_INCHES = 4.5  # room for the title above small grids


def heat_over(heat: np.ndarray, height: int, width: int) -> np.ndarray:
    """An (h, w) map of the network's square input resized bilinearly to (`height`, `width`).

    The input was the whole image squashed to a square (`data.images.fit_square`: no crop, no
    padding), so stretching the map back onto the image's own aspect inverts it exactly: map
    pixel (i, j) covers image rows [i·H/h, (i+1)·H/h) and columns [j·W/w, (j+1)·W/w) (pixel
    centres aligned, `align_corners=False`, as the squash samples; `methods.upsample`, which
    brings layer maps to the input's size the same way)."""
    maps = torch.from_numpy(np.ascontiguousarray(heat, dtype=np.float32))[None]
    return upsample(maps, (height, width))[0].numpy()


def overlay_pixels(image: Tensor | np.ndarray, heat: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): `heat` (values in [0, 1], any size; see `heat_over`) in `HEAT_COLORMAP`
    over the uint8 (C, H, W) `image` in gray, mixed `HEAT_ALPHA` to 1 - `HEAT_ALPHA`."""
    from matplotlib import colormaps

    gray = np.asarray(image, dtype=np.float32).mean(axis=0)[..., None] / 255
    spread = np.clip(heat_over(heat, *gray.shape[:2]), 0, 1)
    colours = colormaps[HEAT_COLORMAP](spread)[..., :3]
    mixed = (1 - HEAT_ALPHA) * gray + HEAT_ALPHA * colours
    return np.rint(mixed * 255).astype(np.uint8)


def _show_image(axes: Axes, pixels: Tensor | np.ndarray) -> None:
    """Draw a uint8 (C, H, W) image, in color when it has 3 channels."""
    image = np.asarray(pixels)
    if image.shape[0] == 3:
        _show_pixels(axes, image.transpose(1, 2, 0))
    else:
        _show_pixels(axes, image[0], cmap="gray", vmin=0, vmax=255)


def _show_pixels(axes: Axes, pixels: np.ndarray, **style: object) -> None:
    """(H, W) or (H, W, 3) pixels on bare axes, antialiased when shrunk to fit the panel."""
    axes.imshow(pixels, interpolation="antialiased", **style)
    axes.set_xticks([])
    axes.set_yticks([])


def _overlay(axes: Axes, pixels: Tensor | np.ndarray, heat: np.ndarray) -> ScalarMappable:
    """The map over the image (`overlay_pixels`), and the color scale for a color bar."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    _show_pixels(axes, overlay_pixels(pixels, heat))
    return ScalarMappable(Normalize(0, 1), HEAT_COLORMAP)


def explanation_figure(
    pixels: Tensor | np.ndarray, heat: np.ndarray, *, method: str, caption: str
) -> Figure:
    """The image and its heat map overlaid (with a color bar), titled with `caption`; `heat`
    may have another size than the image (see `heat_over`)."""
    figure = new_figure(2 * PANEL_INCHES + 0.6, PANEL_INCHES + 0.7)
    image_axes, heat_axes = figure.subplots(1, 2)
    _show_image(image_axes, pixels)
    image_axes.set_title("image", fontsize=9)
    shown = _overlay(heat_axes, pixels, heat)
    heat_axes.set_title(method, fontsize=9)
    figure.colorbar(shown, ax=heat_axes, fraction=0.046, pad=0.04, alpha=HEAT_ALPHA)
    figure.suptitle(caption, fontsize=9)
    return figure


def comparison_figure(
    pixels: Sequence[Tensor], maps: dict[str, np.ndarray], row_titles: list[str]
) -> Figure:
    """One row per image (each of its own size): the image, then its map under each method
    (one column each)."""
    rows, columns = len(row_titles), 1 + len(maps)
    figure = new_figure(columns * PANEL_INCHES * 0.8, rows * PANEL_INCHES * 0.8 + 0.3)
    grid = np.asarray(figure.subplots(rows, columns, squeeze=False))
    for row, title in enumerate(row_titles):
        _show_image(grid[row, 0], pixels[row])
        grid[row, 0].set_title(title, fontsize=7)
        for column, (method, method_maps) in enumerate(maps.items(), start=1):
            _overlay(grid[row, column], pixels[row], method_maps[row])
            if row == 0:
                grid[row, column].set_title(method, fontsize=9)
    return figure


def _tile(figure: Figure, count: int) -> list[Axes]:
    """A near-square grid of `count` bare panels."""
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.asarray(figure.subplots(rows, columns, squeeze=False)).ravel()
    for axes in grid:
        axes.set_axis_off()
    return list(grid[:count])


def feature_maps_figure(activation: np.ndarray, title: str) -> Figure:
    """The first `MAX_FEATURE_MAPS` channels of a (C, h, w) activation, each on its own scale."""
    shown = activation[:MAX_FEATURE_MAPS]
    columns = math.ceil(math.sqrt(len(shown)))
    side = min(1.3, 12 / columns)
    rows = math.ceil(len(shown) / columns)
    figure = new_figure(max(columns * side, MIN_GRID_INCHES), rows * side + 0.6)
    for index, (axes, channel) in enumerate(zip(_tile(figure, len(shown)), shown, strict=True)):
        axes.imshow(channel, cmap="viridis", interpolation="nearest")
        axes.set_title(str(index), fontsize=6, pad=1)
    if len(activation) > len(shown):
        title += f" (first {len(shown)} of {len(activation)} maps)"
    figure.suptitle(title, fontsize=9)
    return figure


def filters_figure(weight: np.ndarray, title: str) -> Figure:
    """Convolution filters (out, in, k, k): in color for 3 input channels, else their mean in
    gray; each filter is scaled to its own range."""
    shown = weight[:MAX_FEATURE_MAPS]
    columns = math.ceil(math.sqrt(len(shown)))
    rows = math.ceil(len(shown) / columns)
    figure = new_figure(max(columns * 0.9, MIN_GRID_INCHES), rows * 0.9 + 0.6)
    for axes, kernel in zip(_tile(figure, len(shown)), shown, strict=True):
        low, high = kernel.min(), kernel.max()
        scaled = (kernel - low) / (high - low) if high > low else np.zeros_like(kernel)
        if scaled.shape[0] == 3:
            axes.imshow(scaled.transpose(1, 2, 0), interpolation="nearest")
        else:
            axes.imshow(scaled.mean(axis=0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if len(weight) > len(shown):
        title += f" (first {len(shown)} of {len(weight)})"
    figure.suptitle(title, fontsize=9)
    return figure


def sanity_figure(report: SanityReport) -> Figure:
    """Rank correlation against layers re-initialized, and the deletion and insertion curves."""
    figure = new_figure(13, 4)
    randomization, deletion, insertion = figure.subplots(1, 3)
    steps = np.arange(len(report.randomization) + 1)
    for method in report.methods:
        values = [1.0] + [row[method] for _, row in report.randomization]
        randomization.plot(steps, values, marker="o", label=method)
    randomization.set_xticks(steps, ["trained"] + [unit for unit, _ in report.randomization])
    randomization.tick_params(axis="x", labelrotation=60, labelsize=7)
    randomization.axhline(0, color="gray", linewidth=0.8)
    randomization.set_ylim(-1.05, 1.05)
    randomization.set_ylabel("Spearman rank correlation")
    randomization.set_title("model randomization (cumulative, top down)", fontsize=9)
    randomization.legend(fontsize=7)
    for axes, curves, name in (
        (deletion, report.deletion, "deletion"),
        (insertion, report.insertion, "insertion"),
    ):
        for method, curve in curves.items():
            style = ":" if method not in report.methods else "-"
            label = f"{method} (AUC {report.area(curve):.3f})"
            axes.plot(np.linspace(0, 1, len(curve)), curve, style, label=label)
        axes.set_xlabel(f"fraction of pixels {'removed' if name == 'deletion' else 'revealed'}")
        axes.set_ylabel("probability of the explained class")
        axes.set_ylim(-0.02, 1.02)
        axes.set_title(name, fontsize=9)
        axes.legend(fontsize=7)
    return figure
