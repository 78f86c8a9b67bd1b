"""Image files a browser can send, good and bad, built in memory for the server tests."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from imagetrees import png_header_claiming  # noqa: E402  (one home for the crafted header)

__all__ = ["png_header_claiming"]


def encode(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def gray_png(width: int = 40, height: int = 30, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG")


def rgb_jpeg(width: int = 64, height: int = 48) -> bytes:
    pixels = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=90)


def truncated_jpeg() -> bytes:
    data = rgb_jpeg(256, 256)
    return data[: len(data) // 3]


def one_pixel_png() -> bytes:
    return encode(Image.new("L", (1, 1), 128), "PNG")


def sixteen_bit_png() -> bytes:
    pixels = np.random.default_rng(2).integers(0, 65536, (32, 32), dtype=np.uint16)
    return encode(Image.fromarray(pixels), "PNG")


def float_tiff() -> bytes:
    return encode(Image.fromarray(np.ones((32, 32), dtype=np.float32)), "TIFF")


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (32, 32), (10, 200, 30, 0)), "JPEG")


def animated_gif() -> bytes:
    frames = [Image.new("L", (32, 32), shade) for shade in (0, 128, 255)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def rgba_png() -> bytes:
    return encode(Image.new("RGBA", (32, 32), (200, 10, 10, 128)), "PNG")


def palette_gif() -> bytes:
    return encode(Image.new("RGB", (32, 32), (0, 90, 200)).convert("P"), "GIF")


# Every pixel mode the one decoder takes, as files of `GALLERY_SIZE` showing `left` on their
# left half and `right` on their right half once decoded upright to RGB.
GALLERY_SIZE = (32, 24)  # (width, height): not square, so a missed rotation changes the shape
LEFT_DARK, RIGHT_LIGHT = (20, 40, 160), (230, 210, 40)
WHITE = (255, 255, 255)


def halves(mode: str, left: object, right: object, size: tuple[int, int] = GALLERY_SIZE):
    """An image of `mode`: `left` on the left half, `right` on the right half."""
    image = Image.new(mode, size, left)
    image.paste(Image.new(mode, (size[0] // 2, size[1]), right), (size[0] // 2, 0))
    return image


def exif_rotated_jpeg(orientation: int) -> bytes:
    """A JPEG stored turned, with the EXIF orientation (6 or 8) that turns it upright."""
    upright = halves("RGB", LEFT_DARK, RIGHT_LIGHT)
    turn = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    stored = upright.transpose(turn)  # what exif_transpose undoes
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def palette_png(transparent: bool) -> bytes:
    """A palette PNG: index 0 on the left (transparent when asked), index 1 on the right."""
    image = halves("P", 0, 1)
    image.putpalette([*LEFT_DARK, *RIGHT_LIGHT])
    return encode(image, "PNG", **({"transparency": 0} if transparent else {}))


def cmyk_halves_jpeg() -> bytes:
    return encode(halves("CMYK", (0, 0, 0, 255), (0, 40, 200, 10)), "JPEG", quality=95)


def sixteen_bit_halves_png() -> bytes:
    """16-bit gray: 0x1000 and 0xC000, which are 16 and 192 in 8 bits (clipping gives 255)."""
    pixels = np.full(GALLERY_SIZE[::-1], 0x1000, dtype=np.uint16)
    pixels[:, GALLERY_SIZE[0] // 2 :] = 0xC000
    return encode(Image.fromarray(pixels), "PNG")


def animated_halves_gif() -> bytes:
    first = halves("L", 30, 220)
    later = [Image.new("L", GALLERY_SIZE, shade) for shade in (128, 255)]
    return encode(first, "GIF", save_all=True, append_images=later, duration=100)


# name -> (file suffix, bytes maker, decoded left colour, decoded right colour)
GALLERY = {
    "RGB": (".png", lambda: encode(halves("RGB", LEFT_DARK, RIGHT_LIGHT), "PNG"),
            LEFT_DARK, RIGHT_LIGHT),
    "L": (".png", lambda: encode(halves("L", 30, 220), "PNG"), (30,) * 3, (220,) * 3),
    "LA": (".png", lambda: encode(halves("LA", (30, 0), (60, 255)), "PNG"), WHITE, (60,) * 3),
    "P": (".png", lambda: palette_png(False), LEFT_DARK, RIGHT_LIGHT),
    "P+transparency": (".png", lambda: palette_png(True), WHITE, RIGHT_LIGHT),
    "CMYK JPEG": (".jpg", cmyk_halves_jpeg, (0, 0, 0),
                  halves("CMYK", 0, (0, 40, 200, 10)).convert("RGB").getpixel((31, 0))),
    "I;16 PNG": (".png", sixteen_bit_halves_png, (16,) * 3, (192,) * 3),
    "RGBA": (".png", lambda: encode(halves("RGBA", (0, 0, 0, 0), (*LEFT_DARK, 255)), "PNG"),
             WHITE, LEFT_DARK),
    "EXIF 6": (".jpg", lambda: exif_rotated_jpeg(6), LEFT_DARK, RIGHT_LIGHT),
    "EXIF 8": (".jpg", lambda: exif_rotated_jpeg(8), LEFT_DARK, RIGHT_LIGHT),
    "animated GIF": (".gif", animated_halves_gif, (30,) * 3, (220,) * 3),
}  # fmt: skip
