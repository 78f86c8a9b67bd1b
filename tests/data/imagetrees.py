"""Image files and trees written with PIL on the fly, for the data-layer tests.

Images are solid colours that encode where they came from (`pixel_code`), so a test can check
that every decoded image sits beside the label of the file it was decoded from.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import torch
from PIL import Image


def pixel_code(label: int, index: int) -> tuple[int, int, int]:
    """The solid RGB colour of image `index` of class `label`: decodable back to both."""
    return (10 + 20 * label, 3 * index, 99)


def decode_code(image: torch.Tensor) -> tuple[int, int]:
    """(label, index) of an image coloured by `pixel_code`."""
    red, green, _ = image[:, 0, 0].tolist()
    return (red - 10) // 20, green // 3


def write_image(
    path: Path,
    color: tuple[int, int, int] = (0, 0, 0),
    size: tuple[int, int] = (12, 10),
    mode: str = "RGB",
) -> Path:
    """A solid image of `color` and (width, height) `size`, converted to `mode`, saved by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, color)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


def write_class_tree(
    root: Path, counts: dict[str, int], size: tuple[int, int] = (12, 10), suffix: str = ".png"
) -> Path:
    """`root/<class>/<i><suffix>`: `counts[class]` images coloured by `pixel_code`."""
    for label, (name, count) in enumerate(sorted(counts.items())):
        for index in range(count):
            write_image(root / name / f"{index:04d}{suffix}", pixel_code(label, index), size)
    return root


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims `width`x`height` (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    pixels = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
