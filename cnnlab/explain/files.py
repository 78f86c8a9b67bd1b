"""Explaining image files with a trained checkpoint: every map is computed, then every figure
built, and only then is anything written (atomically), so bad input leaves no partial output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnlab.engine.plots import save_figure
from cnnlab.errors import OptionError
from cnnlab.explain.inputs import ImageFiles, load_image_files
from cnnlab.explain.methods import METHODS, Explanation, explain
from cnnlab.explain.render import comparison_figure, explanation_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COMPARISON_FILE = "comparison.png"


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
    explanations = {m: explain(model, images.inputs, m, chosen, layer) for m in methods}
    return ExplainedFiles(images, classes, explanations)


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


def explanation_figures(result: ExplainedFiles) -> dict[str, Figure]:
    """File name -> figure: one per image and method, and a comparison grid for several."""
    figures: dict[str, Figure] = {}
    pixels = result.images.pixels.cpu()
    stems = output_stems(result.images.paths)
    for method, explanation in result.explanations.items():
        for index, stem in enumerate(stems):
            text = caption(result, index, explanation)
            figures[f"{stem}.{method}.png"] = explanation_figure(
                pixels[index], explanation.maps[index], method=method, caption=text
            )
    if len(result.explanations) > 1:
        first = next(iter(result.explanations.values()))
        titles = [
            caption(result, i, first).replace(": ", "\n", 1).replace(", ", "\n", 1)
            for i in range(len(stems))
        ]
        maps = {method: explanation.maps for method, explanation in result.explanations.items()}
        figures[COMPARISON_FILE] = comparison_figure(pixels, maps, titles)
    return figures


def write_figures(figures: dict[str, Figure], out: Path) -> list[Path]:
    """Save every figure into `out` (each atomically)."""
    return [save_figure(figure, out / name) for name, figure in figures.items()]
