"""Image files as a checkpoint's model sees them: decoded, resized and normalized as in training.

All files are read before anything is explained, so a file that is not an image stops the run
before any output is written. A file with another channel count than the model's is converted
(color to grayscale or back) and comes with a note saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from cnnlab.data.images import read_image, stored_channels
from cnnlab.engine.predict import expand_image_paths, normalize_images
from cnnlab.errors import DataError

CHANNEL_NAMES = {1: "grayscale", 3: "color"}


@dataclass
class ImageFiles:
    """Decoded files: `pixels` uint8 (N, C, H, W) for display, `inputs` normalized for the model."""

    paths: list[Path]
    pixels: Tensor
    inputs: Tensor
    notes: list[str]


def load_image_files(
    paths: Sequence[str | Path], checkpoint: dict, device: torch.device | str = "cpu"
) -> ImageFiles:
    """Read `paths` (folders expand to their images) with the checkpoint's `image_shape`,
    `mean` and `std`. Any unreadable file raises `DataError`, naming it."""
    channels, size = int(checkpoint["image_shape"][0]), int(checkpoint["image_shape"][1])
    files: list[Path] = []
    pixels: list[Tensor] = []
    notes: list[str] = []
    for path, problem in expand_image_paths(paths):
        if problem is not None:
            raise DataError(problem)
        pixels.append(read_image(path, channels=channels, size=size))
        found = stored_channels(path)
        if found != channels:
            notes.append(
                f"{path}: {CHANNEL_NAMES[found]} image converted to {CHANNEL_NAMES[channels]}, "
                f"as the model takes {channels} channel{'s' if channels > 1 else ''}"
            )
        files.append(path)
    if not files:
        raise DataError("no image files given")
    batch = torch.stack(pixels)
    return ImageFiles(
        files, batch, normalize_images(batch, checkpoint["mean"], checkpoint["std"], device), notes
    )
