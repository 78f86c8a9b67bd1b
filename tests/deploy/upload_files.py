"""Image files a browser can send, good and bad, built in memory for the server tests."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


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


def truncated_jpeg() -> bytes:
    data = rgb_jpeg(256, 256)
    return data[: len(data) // 3]


def one_pixel_png() -> bytes:
    return encode(Image.new("L", (1, 1), 128), "PNG")


def sixteen_bit_png() -> bytes:
    pixels = np.random.default_rng(2).integers(0, 65536, (32, 32), dtype=np.uint16)
    return encode(Image.fromarray(pixels), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (32, 32), (10, 200, 30, 0)), "JPEG")


def animated_gif() -> bytes:
    frames = [Image.new("L", (32, 32), shade) for shade in (0, 128, 255)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def rgba_png() -> bytes:
    return encode(Image.new("RGBA", (32, 32), (200, 10, 10, 128)), "PNG")


def palette_gif() -> bytes:
    return encode(Image.new("RGB", (32, 32), (0, 90, 200)).convert("P"), "GIF")
