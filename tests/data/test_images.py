"""The one image decoder, `read_image`: 16-bit scaling, alpha on white, EXIF orientation, the
libjpeg-turbo path against PIL's, and files that claim too many pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from imagetrees import png_header_claiming
from PIL import Image

from cnnlab.data import images
from cnnlab.data.images import ImageError, ImageTooLarge, native_shape, read_image
from cnnlab.errors import DataError


def encode(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("dtype", "format"), [(np.uint16, "PNG"), (">u2", "TIFF"), (np.int32, "TIFF")],
    ids=["I;16 PNG", "I;16B TIFF", "I TIFF"],
)  # fmt: skip
def test_sixteen_bit_gradient_decodes_to_a_smooth_eight_bit_gradient(dtype, format: str) -> None:
    values = np.round(np.linspace(0, 65535, 1024)).astype(np.int64)
    data = encode(Image.fromarray(np.tile(values, (3, 1)).astype(dtype)), format)

    decoded = read_image(data, channels=1)[0, 0].numpy().astype(np.int64)

    eight_bit = np.round(values / 257)  # the 8-bit image the 16-bit one stands for
    assert np.abs(decoded - eight_bit).max() <= 1
    assert len(np.unique(decoded)) == 256 and (np.diff(decoded) >= 0).all()
    assert torch.equal(read_image(data, channels=3), read_image(data, channels=1).expand(3, -1, -1))


@pytest.mark.parametrize("alpha", [0, 64, 128, 255])
def test_transparency_is_composited_on_white(alpha: int) -> None:
    color = np.array([200, 100, 0])
    data = encode(Image.new("RGBA", (8, 8), (*color.tolist(), alpha)), "PNG")

    decoded = read_image(data)[:, 0, 0].numpy().astype(float)

    expected = color * alpha / 255 + 255 * (1 - alpha / 255)
    assert np.abs(decoded - expected).max() <= 1


def noise_jpeg(mode: str, orientation: int) -> bytes:
    shape = (24, 40) if mode == "L" else (24, 40, 3)
    pixels = np.random.default_rng(orientation).integers(0, 256, shape, dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(pixels), "JPEG", quality=90, exif=exif.tobytes())


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_libjpeg_turbo_gives_the_pixels_pil_gives(
    monkeypatch: pytest.MonkeyPatch, mode: str, orientation: int, channels: int
) -> None:
    assert images._decode_jpeg is not None  # torchvision's op is there: the fast path runs
    data = noise_jpeg(mode, orientation)
    fast = read_image(data, channels=channels)
    monkeypatch.setattr(images, "_decode_jpeg", None)
    pil = read_image(data, channels=channels)

    assert torch.equal(fast, pil)
    assert tuple(fast.shape[1:]) == ((40, 24) if orientation in (6, 8) else (24, 40))


def test_native_shape_is_upright_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "portrait.jpg"
    path.write_bytes(noise_jpeg("RGB", 6))
    assert native_shape(path) == (3, 40, 24) == (3, *read_image(path).shape[1:])
    gray = tmp_path / "gray.png"
    gray.write_bytes(encode(Image.fromarray(np.zeros((5, 7), dtype=np.uint16)), "PNG"))
    assert native_shape(gray) == (1, 5, 7)


@pytest.mark.parametrize("side", [100_000, 10_000])
def test_a_header_claiming_too_many_pixels_is_one_error_naming_the_file(
    tmp_path: Path, side: int
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_claiming(side, side))
    with pytest.raises(ImageTooLarge, match=r"bomb\.png: image too large") as refused:
        read_image(path)
    assert "\n" not in str(refused.value)


def test_a_jpeg_header_claiming_too_many_pixels_is_refused_before_libjpeg_turbo() -> None:
    data = bytearray(noise_jpeg("RGB", 1))
    frame = data.index(b"\xff\xc0") + 5  # baseline frame header: length, precision, H, W
    data[frame : frame + 4] = (60_000).to_bytes(2, "big") * 2
    with pytest.raises(ImageTooLarge, match=r"60000x60000 pixels \(3600 MP\); the limit is 89 MP"):
        read_image(bytes(data))


def test_the_pixel_cap_can_be_lowered() -> None:
    data = encode(Image.new("RGB", (100, 60)), "PNG")
    assert read_image(data, max_pixels=6000).shape == (3, 60, 100)
    with pytest.raises(ImageTooLarge, match=r"100x60 pixels \(0 MP\); the limit is 0 MP"):
        read_image(data, max_pixels=5999)


def test_float_pixels_and_non_images_are_data_errors(tmp_path: Path) -> None:
    floats = encode(Image.fromarray(np.zeros((8, 8), dtype=np.float32)), "TIFF")
    with pytest.raises(ImageError, match="unsupported pixel mode F"):
        read_image(floats)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(DataError, match=r"notes\.jpg: not a readable image"):
        read_image(text)
