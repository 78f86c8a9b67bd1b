"""Checking and decoding an uploaded image, entirely in memory, with the one decoder.

Uploads go through `cnnlab.data.images.read_image` (on the bytes), as training, `predict` and
`explain` decode their files, so an upload gives the pixels its file gives everywhere else:
every mode those accept (CMYK, 16-bit, alpha on white, EXIF orientation, the first frame of an
animated GIF). The decoder reads the header first, so a small file that claims a huge image (a
decompression bomb) is refused before any pixel is decoded; the server's pixel cap
(`MAX_PIXELS`, 40 MP) is well below Pillow's own (about 89 MP). What is refused, and why:

- not an image in one of `FORMATS` (a text file named `.jpg`): 415
- more pixels than the cap: 413
- a side under `MIN_SIDE` pixels (a 1x1 image carries nothing to classify): 422
- pixel data that is truncated or corrupt, or a pixel mode the decoder does not take (32-bit
  float): 422
"""

from __future__ import annotations

import torch

from cnnlab.data.images import ImageTooLarge, NotAnImage, fit_square, read_image
from cnnlab.errors import DataError

MAX_PIXELS = 40_000_000
MIN_SIDE = 8
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")


class UploadError(DataError):
    """An upload the server refuses, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode_upload(
    data: bytes, *, channels: int, size: int, max_pixels: int = MAX_PIXELS
) -> torch.Tensor:
    """The upload as a uint8 (channels, size, size) tensor, as training decoded its images.

    Raises `UploadError` (with an HTTP status) for anything the module docstring lists.
    """
    if not data:
        raise UploadError(400, "empty upload; send the image file's bytes as the request body")
    try:
        image = read_image(data, channels, max_pixels=max_pixels, formats=FORMATS)
    except NotAnImage:
        raise UploadError(
            415, f"not an image; upload a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} file"
        ) from None
    except ImageTooLarge as error:
        raise UploadError(413, str(error)) from None
    except DataError as error:
        raise UploadError(422, str(error)) from None
    height, width = image.shape[1:]
    if min(height, width) < MIN_SIDE:
        raise UploadError(
            422, f"image is {width}x{height} pixels; upload one at least {MIN_SIDE}x{MIN_SIDE}"
        )
    return fit_square(image, size)
