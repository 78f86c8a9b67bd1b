"""The one image decoder: a file or an upload's bytes -> uint8 `(C, H, W)` tensor.

Every entry point decodes through `read_image`: image trees (through the decode cache),
`predict`, `explain`, `features`, `data stats` and `serve`, so a file gives the same pixels
everywhere. In order, it

1. reads the header only and refuses a file that claims more than `max_pixels` pixels
   (`ImageTooLarge`; by default Pillow's `Image.MAX_IMAGE_PIXELS`, about 89 MP) before any
   pixel is decoded;
2. takes the first frame of an animated file;
3. applies the EXIF orientation (`ImageOps.exif_transpose`), so phone photos come upright;
4. scales 16-bit grayscale (`I;16`, `I;16B`, ..., and `I`, read as 16-bit) to 8 bits by keeping
   the high byte, as Pillow reads 16-bit colour PNGs;
5. composites transparency (RGBA, LA, PA, or a palette, gray or RGB image with a transparent
   colour) on white, as an image viewer shows it;
6. converts to L (ITU-R 601 luma, PIL's `convert("L")`) or RGB (CMYK without a colour profile).

8-bit JPEGs in gray or colour (not CMYK) are decoded by libjpeg-turbo (torchvision's op), about
twice as fast as PIL on small images, with the same pixels (tested); their header is read
without PIL, and any JPEG the op rejects goes to PIL. `DECODER_VERSION` is part of the decode
cache's key: bump it whenever the pixels this module gives for some file change.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor

from cnnlab.errors import DataError

DECODER_VERSION = 2  # 2: EXIF orientation, 16-bit scaled, alpha on white, first frame, size cap
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N")
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")

# torchvision's libjpeg-turbo op, called directly: its wrapper `torchvision.io.decode_jpeg` is
# deprecated since 0.29 and warns on every call. Without the op, PIL decodes everything.
_decode_jpeg = getattr(getattr(torch.ops, "image", None), "decode_jpeg", None)
_UNCHANGED = 0  # torchvision.io.ImageReadMode.UNCHANGED: the file's own channels


class ImageError(DataError):
    """A file or upload the decoder cannot turn into pixels; `reason` says why (no path)."""

    def __init__(self, name: str | None, reason: str) -> None:
        super().__init__(f"{name}: {reason}" if name else reason)
        self.reason = reason


class NotAnImage(ImageError):
    """Bytes that are no image format Pillow reads (a text file named `.jpg`)."""


class ImageTooLarge(ImageError):
    """A header that claims more pixels than the decoder's cap (a decompression bomb)."""


def read_image(
    source: str | Path | bytes,
    channels: int = 3,
    size: int | None = None,
    *,
    max_pixels: int | None = None,
    formats: tuple[str, ...] | None = None,
) -> torch.Tensor:
    """Decode a file (path) or its bytes to uint8 `(channels, H, W)`, as the module docstring
    says; resize to `size`x`size` when given.

    `max_pixels` defaults to `Image.MAX_IMAGE_PIXELS`; `formats` limits the formats Pillow
    tries. Raises `ImageError` (a `DataError`; `NotAnImage`, `ImageTooLarge`) naming the path.
    """
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    name = None if isinstance(source, bytes | bytearray) else str(source)
    data = source if name is None else _read_bytes(source)
    tensor = None
    jpeg = _decode_jpeg is not None and (formats is None or "JPEG" in formats)
    frame_size = _jpeg_frame_size(data) if jpeg else None
    if frame_size is not None:
        _check_pixels(*frame_size, name, max_pixels)
        tensor = _libjpeg_turbo(data, channels)
    if tensor is None:
        with _open(data, name, max_pixels, formats) as image:
            tensor = _decode_with_pil(image, channels, name)
    return fit_square(tensor, size)


def native_shape(path: str | Path) -> tuple[int, int, int]:
    """(channels, height, width) that `path` decodes to with its own channel count (1 for
    grayscale modes, else 3), upright; from the header alone."""
    with _open(_read_bytes(path), str(path), None, None) as image:
        width, height = image.size
        if image.getexif().get(_ORIENTATION, 1) in _QUARTER_TURNS:
            width, height = height, width
        return (1 if image.mode in GRAYSCALE_MODES else 3), height, width


def fit_square(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """`image` (C, H, W) resized to `size`x`size` (`resize_uint8`); as it is when it already is
    or `size` is None."""
    if size is None or tuple(image.shape[1:]) == (size, size):
        return image
    return resize_uint8(image[None], size)[0]


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch `(N, C, H, W)` to `size`x`size` with antialiased bilinear filtering."""
    resized = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return resized.round_().clamp_(0, 255).to(torch.uint8)


_START_OF_FRAME = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_ORIENTATION = 0x0112  # the EXIF orientation tag
_QUARTER_TURNS = (5, 6, 7, 8)  # orientations that swap width and height


def _read_bytes(path: str | Path) -> bytearray:
    """The file's bytes, writable so that torch can wrap them without a copy.

    Raw `os` calls take half the time of `Path.read_bytes` on small files.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            data = bytearray(os.fstat(descriptor).st_size)
            size = os.readv(descriptor, [data])
        finally:
            os.close(descriptor)
    except FileNotFoundError:
        raise ImageError(str(path), "no such file") from None
    except OSError as error:
        raise ImageError(str(path), f"cannot read file ({error.strerror})") from None
    return data[:size] if size < len(data) else data


def _open(
    data: bytes | bytearray,
    name: str | None,
    max_pixels: int | None,
    formats: tuple[str, ...] | None,
) -> Image.Image:
    """The image's header, opened by Pillow, checked against the pixel cap."""
    try:
        # Pillow warns while opening a file of more than `Image.MAX_IMAGE_PIXELS` pixels; such
        # a file is refused below with one error naming it, which the warning would only repeat.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(name, f"image too large to decode safely ({error})") from None
    except UnidentifiedImageError:
        raise NotAnImage(name, "not a readable image (no image format Pillow reads)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise NotAnImage(name, f"not a readable image ({error})") from None
    try:
        _check_pixels(*image.size, name, max_pixels)
    except ImageTooLarge:
        image.close()
        raise
    return image


def _check_pixels(width: int, height: int, name: str | None, max_pixels: int | None) -> None:
    cap = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if cap is not None and width * height > cap:
        raise ImageTooLarge(
            name,
            f"image too large: {width}x{height} pixels ({width * height / 1e6:.0f} MP); "
            f"the limit is {cap / 1e6:.0f} MP",
        )


def _jpeg_frame_size(data: bytes | bytearray) -> tuple[int, int] | None:
    """(width, height) of an 8-bit JPEG with 1 or 3 components (gray, YCbCr or RGB), read from
    its frame header; None for anything else (CMYK, 12-bit, not a JPEG), which PIL decodes.

    Opening the file with PIL for this would cost as much as libjpeg-turbo's whole decode of a
    small image."""
    if not data.startswith(b"\xff\xd8"):
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in _START_OF_FRAME:
            frame = data[position + 4 : position + 10]
            if len(frame) < 6 or frame[0] != 8 or frame[5] not in (1, 3):
                return None
            return int.from_bytes(frame[3:5], "big"), int.from_bytes(frame[1:3], "big")
        if marker == 0xDA:  # start of scan before any frame header
            return None
        position += 2 + length
    return None


def _libjpeg_turbo(data: bytes | bytearray, channels: int) -> torch.Tensor | None:
    """A baseline JPEG decoded by libjpeg-turbo, upright; None when the op rejects it."""
    buffer = data if isinstance(data, bytearray) else bytearray(data)
    try:
        image = _decode_jpeg(torch.frombuffer(buffer, dtype=torch.uint8), _UNCHANGED, True)
    except RuntimeError:
        return None  # PIL has the last word (and the error message)
    if image.shape[0] == channels:
        return image
    if channels == 3 and image.shape[0] == 1:
        return image.expand(3, -1, -1)
    if channels == 1 and image.shape[0] == 3:
        return _luma(image)
    return None


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 (1, H, W) luma of uint8 (3, H, W) RGB, exactly as PIL's `convert("L")` rounds it."""
    weights = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(3, 1, 1)
    return ((rgb.int() * weights).sum(0, keepdim=True) + 0x8000).bitwise_right_shift(16).byte()


def _decode_with_pil(image: Image.Image, channels: int, name: str | None) -> torch.Tensor:
    try:
        ImageOps.exif_transpose(image, in_place=True)  # loads the (first frame's) pixels
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError(name, f"truncated or corrupt image data ({error})") from None
    try:
        image = _eight_bit(image)
        if image.has_transparency_data:
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image.convert("RGBA"))
        target = "L" if channels == 1 else "RGB"
        return pil_to_tensor(image if image.mode == target else image.convert(target))
    except ValueError as error:
        raise ImageError(name, f"unsupported pixel mode {image.mode} ({error})") from None


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit (and `I`) grayscale as 8-bit L, by the high byte; float pixels refused."""
    if image.mode == "F":
        raise ValueError("32-bit float pixels; save the image with 8- or 16-bit pixels")
    if image.mode not in SIXTEEN_BIT_MODES:
        return image
    values = np.asarray(image).astype(np.int64).clip(0, 65535)
    return Image.fromarray((values >> 8).astype(np.uint8), mode="L")
