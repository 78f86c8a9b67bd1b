"""Image files as a checkpoint's model sees them: decoded, resized and normalized as in training.

Files go through the one decoder (`cnnlab.data.images.read_image`). A file that cannot be used
(missing, not an image, corrupt, too large) is skipped with a line saying why and the others go
on, as in `predict`; none usable at all is a `DataError`. All files are read before anything is
explained, so the output never depends on where reading failed. A file with another channel
count than the model's is converted (color to grayscale or back) and comes with a note saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from cnnlab.data.images import native_shape, read_image
from cnnlab.engine.predict import expand_image_paths, normalize_images
from cnnlab.errors import DataError

CHANNEL_NAMES = {1: "grayscale", 3: "color"}


@dataclass
class ImageFiles:
    """Decoded files: `pixels` uint8 (N, C, H, W) for display, `inputs` normalized for the model;
    `skipped` holds one line per file left out (path and reason); `unread` counts the files
    not looked at once `limit` readable ones were found."""

    paths: list[Path]
    pixels: Tensor
    inputs: Tensor
    notes: list[str]
    skipped: list[str] = field(default_factory=list)
    unread: int = 0


def load_image_files(
    paths: Sequence[str | Path],
    checkpoint: dict,
    device: torch.device | str = "cpu",
    limit: int | None = None,
) -> ImageFiles:
    """Read `paths` (folders expand to their images) with the checkpoint's `image_shape`,
    `mean` and `std`, up to `limit` readable files when given. Unusable files are skipped
    (listed in `skipped`); when no file is usable this raises `DataError`, naming the first
    problem."""
    channels, size = int(checkpoint["image_shape"][0]), int(checkpoint["image_shape"][1])
    files: list[Path] = []
    pixels: list[Tensor] = []
    notes: list[str] = []
    skipped: list[str] = []
    unread = 0
    entries = expand_image_paths(paths)
    for position, (path, problem) in enumerate(entries):
        if limit is not None and len(files) == limit:
            unread = len(entries) - position
            break
        if problem is None:
            try:
                pixels.append(read_image(path, channels=channels, size=size))
            except DataError as error:
                problem = str(error)
        if problem is not None:
            skipped.append(problem)
            continue
        found = native_shape(path)[0]
        if found != channels:
            notes.append(
                f"{path}: {CHANNEL_NAMES[found]} image converted to {CHANNEL_NAMES[channels]}, "
                f"as the model takes {channels} channel{'s' if channels > 1 else ''}"
            )
        files.append(path)
    if not files:
        if not skipped:
            raise DataError("no image files given")
        if len(skipped) == 1:
            raise DataError(skipped[0])
        raise DataError(f"none of the {len(skipped)} files is usable (first: {skipped[0]})")
    batch = torch.stack(pixels)
    return ImageFiles(
        files,
        batch,
        normalize_images(batch, checkpoint["mean"], checkpoint["std"], device),
        notes,
        skipped,
        unread,
    )
