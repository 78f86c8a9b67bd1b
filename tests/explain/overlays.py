"""Reading a saved overlay back: the heat map under each pixel, and a photo with a bright object."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from cnnlab.explain.render import HEAT_ALPHA, HEAT_COLORMAP

HEIGHT, WIDTH = 60, 90  # a landscape photo
OBJECT_ROWS, OBJECT_COLUMNS = slice(6, 24), slice(62, 84)  # its top-right corner
DARK, BRIGHT = 30, 230


def photo_with_object(path: Path) -> Path:
    """A gray HEIGHTxWIDTH PNG, dark but for a bright rectangle in its top-right corner."""
    pixels = np.full((HEIGHT, WIDTH), DARK, dtype=np.uint8)
    pixels[OBJECT_ROWS, OBJECT_COLUMNS] = BRIGHT
    Image.fromarray(pixels).save(path)
    return path


def object_mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[OBJECT_ROWS, OBJECT_COLUMNS] = True
    return mask


def heat_under(overlay_path: Path, gray: np.ndarray) -> np.ndarray:
    """(H, W) heat in [0, 1] read back from a saved overlay of the gray (H, W) photo: the photo's
    share taken off each pixel, the rest matched to the nearest of 256 colormap entries."""
    with Image.open(overlay_path) as image:
        overlay = np.asarray(image.convert("RGB"), dtype=np.float64) / 255
    colours = (overlay - (1 - HEAT_ALPHA) * gray[..., None] / 255) / HEAT_ALPHA
    table = colormaps[HEAT_COLORMAP](np.linspace(0, 1, 256))[:, :3]
    distances = ((colours[..., None, :] - table) ** 2).sum(axis=-1)
    return distances.argmin(axis=-1) / 255
