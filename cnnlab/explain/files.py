"""Explaining image files with a trained checkpoint: every map is computed before anything is
written, so bad input leaves no partial output; figures are then drawn and written (each
atomically) one at a time, over each photo at its own size (decoded again as it is drawn) or,
`at_input_size`, over the network's input."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from cnnlab.engine.plots import save_figure
from cnnlab.errors import OptionError
from cnnlab.explain.inputs import ImageFiles, load_image_files
from cnnlab.explain.methods import METHODS, Explanation, explain
from cnnlab.explain.render import comparison_figure, explanation_figure, overlay_pixels
from cnnlab.fileio import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    Drawing = Figure | np.ndarray  # a figure, or uint8 (H, W, 3) pixels written as they are

BATCH_SIZE = 32  # images explained at once
GRID_ROWS = 16  # images per comparison grid


def parse_methods(values: Sequence[str]) -> list[str]:
    """Methods from repeated and comma-separated values, in order, without repeats."""
    methods = [part.strip().lower() for value in values for part in value.split(",")]
    methods = list(dict.fromkeys(method for method in methods if method))
    unknown = [method for method in methods if method not in METHODS]
    if unknown or not methods:
        shown = unknown[0] if unknown else ""
        raise OptionError(f"unknown method '{shown}'; choose from: {', '.join(METHODS)}")
    return methods


def parse_target(text: str, classes: list[str]) -> str | int:
    """'predicted', a class name, or a class index, checked against the checkpoint's classes."""
    if text == "predicted":
        return text
    if text in classes:
        return classes.index(text)
    if text.isdigit() and int(text) < len(classes):
        return int(text)
    shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
    raise OptionError(
        f"unknown class '{text}'; give 'predicted', an index from 0 to {len(classes) - 1}, "
        f"or a class name: {shown}"
    )


@dataclass
class ExplainedFiles:
    """The decoded files and one `Explanation` per method, all for the same targets."""

    images: ImageFiles
    classes: list[str]
    explanations: dict[str, Explanation]


def explain_files(
    model: nn.Module,
    checkpoint: dict,
    paths: Sequence[str | Path],
    methods: Sequence[str],
    *,
    target: str = "predicted",
    layer: str = "auto",
    device: torch.device | str = "cpu",
) -> ExplainedFiles:
    """Read `paths` as the checkpoint's model expects and explain them with each method."""
    classes = list(checkpoint["classes"])
    chosen = parse_target(target, classes)
    images = load_image_files(paths, checkpoint, device)
    explanations = {m: _explain_in_batches(model, images.inputs, m, chosen, layer) for m in methods}
    return ExplainedFiles(images, classes, explanations)


def _explain_in_batches(
    model: nn.Module, inputs: torch.Tensor, method: str, target: str | int, layer: str
) -> Explanation:
    """`explain` on `BATCH_SIZE` images at a time (memory), joined into one `Explanation`."""
    parts = [
        explain(model, inputs[start : start + BATCH_SIZE], method, target, layer)
        for start in range(0, len(inputs), BATCH_SIZE)
    ]
    return Explanation(
        maps=np.concatenate([part.maps for part in parts]),
        targets=[index for part in parts for index in part.targets],
        probabilities=np.concatenate([part.probabilities for part in parts]),
        method=method,
        layer=parts[0].layer,
    )


def output_stems(paths: Sequence[Path]) -> list[str]:
    """A file name stem per image; numbered when two images share a name."""
    stems = [path.stem for path in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{index:03d}-{stem}" for index, stem in enumerate(stems)]


def caption(result: ExplainedFiles, index: int, explanation: Explanation) -> str:
    """'<file>: predicted <class> (p%), explained <class> (q%)'."""
    probabilities = explanation.probabilities[index]
    predicted = int(probabilities.argmax())
    explained = explanation.targets[index]
    return (
        f"{result.images.paths[index].name}: predicted {result.classes[predicted]} "
        f"({probabilities[predicted]:.1%}), explained {result.classes[explained]} "
        f"({probabilities[explained]:.1%})"
    )


def explanation_figures(
    result: ExplainedFiles, *, at_input_size: bool = False
) -> Iterator[tuple[str, Drawing]]:
    """(file name, figure or pixels) pairs, drawn one at a time: per image and method a figure
    `STEM.METHOD.png` and, over the photo at its own size, the bare overlay
    `STEM.METHOD.overlay.png` (`ImageFiles.backdrop`); for several methods, grids of up to
    `GRID_ROWS` images (`comparison.png`, or numbered). `at_input_size` draws everything over
    the network's square input instead, with no overlay files."""
    for index, stem in enumerate(output_stems(result.images.paths)):
        image = result.images.backdrop(index, at_input_size)
        for method, explanation in result.explanations.items():
            heat = explanation.maps[index]
            text = caption(result, index, explanation)
            yield (
                f"{stem}.{method}.png",
                explanation_figure(image, heat, method=method, caption=text),
            )
            if not at_input_size:
                yield f"{stem}.{method}.overlay.png", overlay_pixels(image, heat)
    if len(result.explanations) > 1:
        yield from _comparison_figures(result, at_input_size)


def _comparison_figures(
    result: ExplainedFiles, at_input_size: bool
) -> Iterator[tuple[str, Figure]]:
    """The methods side by side, `GRID_ROWS` images to a figure."""
    first = next(iter(result.explanations.values()))
    count = len(result.images.paths)
    titles = [
        caption(result, i, first).replace(": ", "\n", 1).replace(", ", "\n", 1)
        for i in range(count)
    ]
    starts = range(0, count, GRID_ROWS)
    for number, start in enumerate(starts, start=1):
        rows = range(start, min(start + GRID_ROWS, count))
        images = [result.images.backdrop(index, at_input_size) for index in rows]
        maps = {
            method: explanation.maps[rows.start : rows.stop]
            for method, explanation in result.explanations.items()
        }
        name = "comparison.png" if len(starts) == 1 else f"comparison-{number}.png"
        yield name, comparison_figure(images, maps, titles[rows.start : rows.stop])


def write_figures(drawings: Iterable[tuple[str, Drawing]], out: Path) -> list[Path]:
    """Save each figure, or uint8 (H, W, 3) pixels as a PNG, into `out` (atomically) as it is
    drawn."""
    return [_save(drawing, out / name) for name, drawing in drawings]


def _save(drawing: Drawing, path: Path) -> Path:
    if not isinstance(drawing, np.ndarray):
        return save_figure(drawing, path)
    with atomic_write(path) as file:
        Image.fromarray(drawing).save(file, format="PNG")
    return path
