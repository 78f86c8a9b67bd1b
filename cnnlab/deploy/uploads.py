"""Checking and decoding an uploaded image, from its header first, entirely in memory.

`Image.open` reads only the header; the size, frame count and pixel mode are checked there,
before any pixel is decoded, so a small file that claims a huge image (a decompression bomb)
costs nothing. The pixel cap (`MAX_PIXELS`, 40 MP) is well below Pillow's own limits (a warning
from about 89 MP, an error from about 179 MP); `check_decompression_bombs` turns Pillow's
warning into an error as well. What is refused, and why:

- not an image Pillow reads (a text file named `.jpg`): 415
- more pixels than the cap: 413
- a side under `MIN_SIDE` pixels (a 1x1 image carries nothing to classify): 422
- animated images (which frame?), 16-bit or float pixels, CMYK and other modes whose
  conversion to RGB would guess (no colour profile is applied): 422
- pixel data that is truncated or corrupt: 422
"""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor

from cnnlab.data.images import resize_uint8
from cnnlab.errors import DataError

MAX_PIXELS = 40_000_000
MIN_SIDE = 8
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX")  # 8-bit (or 1-bit) modes


class UploadError(DataError):
    """An upload the server refuses, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_decompression_bombs() -> None:
    """Make Pillow's `DecompressionBombWarning` an error in this process (servers call it once)."""
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def decode_upload(
    data: bytes, *, channels: int, size: int, max_pixels: int = MAX_PIXELS
) -> torch.Tensor:
    """The upload as a uint8 (channels, size, size) tensor, as training decoded its images.

    Raises `UploadError` (with an HTTP status) for anything the module docstring lists.
    """
    if not data:
        raise UploadError(400, "empty upload; send the image file's bytes as the request body")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UploadError(413, f"image too large to decode safely ({error})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UploadError(
            415, f"not an image; upload a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} file"
        ) from None
    with image:
        _check_header(image, max_pixels)
        try:
            image.load()
            converted = image.convert("L" if channels == 1 else "RGB")
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise UploadError(422, f"the image data is truncated or corrupt ({error})") from None
    tensor = pil_to_tensor(converted)
    if tuple(tensor.shape[1:]) == (size, size):
        return tensor
    return resize_uint8(tensor[None], size)[0]


def _check_header(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise UploadError(
            413,
            f"image is {width}x{height} ({width * height / 1e6:.0f} MP); "
            f"the limit is {max_pixels / 1e6:.0f} MP",
        )
    if min(width, height) < MIN_SIDE:
        raise UploadError(
            422, f"image is {width}x{height} pixels; upload one at least {MIN_SIDE}x{MIN_SIDE}"
        )
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise UploadError(422, f"animated image ({frames} frames); upload a still image")
    if image.mode not in MODES:
        raise UploadError(
            422,
            f"{_describe_mode(image.mode)} images are not supported; save it as 8-bit RGB "
            "or grayscale",
        )


def _describe_mode(mode: str) -> str:
    if mode.startswith("I;16") or mode in ("I", "F"):
        return f"16/32-bit ({mode})"
    return f"{mode} colour"
