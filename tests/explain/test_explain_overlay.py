"""Maps over the photo at its own size: each map pixel lands on the region of the photo it was
computed from (the input is the whole photo squashed to a square), large photos are shrunk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from overlays import HEIGHT, WIDTH, heat_under, object_mask, photo_with_object
from PIL import Image

from cnnlab.data.images import fit_square, read_image
from cnnlab.explain.files import ExplainedFiles, explanation_figures, write_figures
from cnnlab.explain.inputs import load_image_files, read_photo
from cnnlab.explain.methods import Explanation, unit_range
from cnnlab.explain.render import heat_over, overlay_pixels

CHECKPOINT = {"image_shape": [1, 16, 16], "mean": [0.5], "std": [0.25]}


def test_each_map_pixel_covers_its_share_of_the_photo() -> None:
    """A map whose value is its column's centre (in map pixels) read back at every photo
    column centre: photo column x lies at (x + 0.5) * w / W map pixels."""
    size, height, width = 8, 30, 50
    ramp = np.tile(np.arange(size, dtype=np.float32) + 0.5, (size, 1))
    spread = heat_over(ramp, height, width)
    assert spread.shape == (height, width)
    centres = (np.arange(width) + 0.5) * size / width
    inside = (centres >= 0.5) & (centres <= size - 0.5)  # clamped beyond the outer centres
    np.testing.assert_allclose(spread[:, inside], np.tile(centres[inside], (height, 1)), atol=1e-5)
    np.testing.assert_allclose(heat_over(ramp.T.copy(), width, height), spread.T, atol=1e-6)


def test_a_squashed_object_maps_back_onto_itself(tmp_path: Path) -> None:
    photo = read_image(photo_with_object(tmp_path / "photo.png"), channels=1)
    squashed = fit_square(photo, 16)[0].float()
    heat = unit_range((squashed - squashed.min())[None])[0].numpy()
    found = heat_over(heat, HEIGHT, WIDTH) > 0.5
    mask = object_mask()
    assert (found & mask).sum() / (found | mask).sum() > 0.85  # intersection over union


def test_overlay_mixes_the_photo_in_gray_with_the_colormap() -> None:
    image = torch.full((3, 4, 6), 100, dtype=torch.uint8)
    image[0] = 160  # mean 120
    overlay = overlay_pixels(image, np.zeros((2, 2), dtype=np.float32))
    assert overlay.shape == (4, 6, 3) and overlay.dtype == np.uint8
    np.testing.assert_array_equal(overlay[0, 0], [60, 60, 124])  # jet(0) = (0, 0, 0.5)


def test_large_photos_shrink_to_the_cap_with_their_aspect(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (1500, 1000), (200, 40, 40)).save(path)
    assert tuple(read_photo(path, channels=3).shape) == (3, 683, 1024)
    assert tuple(read_photo(path, channels=1, max_side=150).shape) == (1, 100, 150)
    small = photo_with_object(tmp_path / "small.png")
    assert torch.equal(read_photo(small, channels=1), read_image(small, channels=1))


def _explained_photo(path: Path) -> ExplainedFiles:
    """The photo with a map that peaks exactly on the object in the network's square input."""
    images = load_image_files([path], CHECKPOINT)
    squashed = images.pixels[:, 0].float()
    maps = unit_range(squashed - squashed.amin()).numpy()
    explanation = Explanation(maps, [0], np.array([[1.0, 0.0]]), "gradcam", "block")
    return ExplainedFiles(images, ["object", "none"], {"gradcam": explanation})


def test_an_explanation_is_drawn_where_the_object_is_in_the_photo(tmp_path: Path) -> None:
    path = photo_with_object(tmp_path / "photo.png")
    written = write_figures(explanation_figures(_explained_photo(path)), tmp_path / "out")
    assert [file.name for file in written] == ["photo.gradcam.png", "photo.gradcam.overlay.png"]
    heat = heat_under(written[1], read_image(path, channels=1)[0].numpy().astype(np.float64))
    assert heat.shape == (HEIGHT, WIDTH)
    row, column = np.unravel_index(heat.argmax(), heat.shape)
    assert object_mask()[row, column]
    assert heat[object_mask()].mean() > 0.8 and heat[~object_mask()].mean() < 0.2


def test_figures_show_the_photo_or_with_at_input_size_the_network_input(tmp_path: Path) -> None:
    result = _explained_photo(photo_with_object(tmp_path / "photo.png"))
    for at_input_size, shape in ((False, (HEIGHT, WIDTH)), (True, (16, 16))):
        drawn = dict(explanation_figures(result, at_input_size=at_input_size))
        assert list(drawn) == ["photo.gradcam.png"] + (
            [] if at_input_size else ["photo.gradcam.overlay.png"]
        )
        image_axes, heat_axes = drawn["photo.gradcam.png"].axes[:2]
        assert image_axes.images[0].get_array().shape[:2] == shape
        assert heat_axes.images[0].get_array().shape[:2] == shape
