"""Image files as a checkpoint's model sees them: decoded, resized and normalized as in training.

Files go through the one decoder (`cnnlab.data.images.read_image`). A file that cannot be used
(missing, not an image, corrupt, too large) is skipped with a line saying why and the others go
on, as in `predict`; none usable at all is a `DataError`. All files are read before anything is
explained, so the output never depends on where reading failed. A file with another channel
count than the model's is converted (color to grayscale or back) and comes with a note saying so.

`read_photo` decodes a file again at its own size (upright, through the same decoder), for
drawing maps over the photo rather than over the network's square input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnlab.data.images import native_shape, read_image
from cnnlab.engine.predict import expand_image_paths, normalize_images
from cnnlab.errors import DataError

CHANNEL_NAMES = {1: "grayscale", 3: "color"}
PHOTO_MAX_SIDE = 1024  # photos drawn under a map are shrunk to this longest side, at most


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

    def backdrop(self, index: int, at_input_size: bool = False) -> Tensor:
        """What a map of image `index` is drawn over: its photo at its own size (`read_photo`,
        decoded again), or `at_input_size` the network's square input (`pixels`)."""
        if at_input_size:
            return self.pixels[index].cpu()
        return read_photo(self.paths[index], channels=self.pixels.shape[1])


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


def read_photo(path: str | Path, channels: int, max_side: int = PHOTO_MAX_SIDE) -> Tensor:
    """uint8 (channels, H, W): the file upright at its own size (`read_image`), shrunk to
    `max_side` on its longest side (antialiased bilinear, aspect kept) when larger."""
    photo = read_image(path, channels=channels)
    height, width = photo.shape[1:]
    scale = max_side / max(height, width)
    if scale >= 1:
        return photo
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    shrunk = F.interpolate(
        photo[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False
    )
    return shrunk[0].round_().clamp_(0, 255).to(torch.uint8)
