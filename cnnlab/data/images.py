"""Decoding one image file into a uint8 (C, H, W) tensor, whatever its format or mode."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor

from cnnlab.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def read_image(path: str | Path, channels: int = 3, size: int | None = None) -> torch.Tensor:
    """Decode `path` to uint8 `(channels, H, W)`; resize to `size`x`size` when given.

    Grayscale, palette, RGBA and CMYK images are converted (RGBA is composited on black by
    dropping alpha, as PIL's convert does). Corrupt or non-image files raise `DataError`.
    """
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            tensor = pil_to_tensor(image)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise DataError(f"{path}: not a readable image ({error})") from None
    if size is not None and tuple(tensor.shape[1:]) != (size, size):
        tensor = resize_uint8(tensor[None], size)[0]
    return tensor


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch `(N, C, H, W)` to `size`x`size` with antialiased bilinear filtering."""
    resized = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return resized.round_().clamp_(0, 255).to(torch.uint8)


GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "F")


def stored_channels(path: str | Path) -> int:
    """How many channels a readable image file holds as `read_image` sees them: 1 or 3."""
    with Image.open(path) as image:
        return 1 if image.mode in GRAYSCALE_MODES else 3
