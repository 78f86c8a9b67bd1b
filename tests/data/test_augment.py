"""Batch augmentation: each transform checked image by image against its definition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab.data.augment import (
    ColorJitter,
    Cutout,
    HorizontalFlip,
    MultiScale,
    RandomShift,
    parse_augment,
)
from cnnlab.errors import OptionError, UnknownNameError


def _batch(count: int = 32, channels: int = 3, side: int = 10) -> torch.Tensor:
    return torch.randn(count, channels, side, side)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_flip_mirrors_some_images_and_keeps_the_others() -> None:
    images = _batch()
    out = HorizontalFlip()(images, _generator())
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < len(images)


def test_same_generator_seed_gives_the_same_augmentation() -> None:
    images = _batch()
    augment = parse_augment("flip,crop:2,cutout:3,jitter:0.3")
    assert torch.equal(augment(images, _generator(5)), augment(images, _generator(5)))
    assert not torch.equal(augment(images, _generator(5)), augment(images, _generator(6)))


def _windows(padded: torch.Tensor, side: int) -> list[torch.Tensor]:
    limit = padded.shape[-1] - side + 1
    return [padded[:, y : y + side, x : x + side] for y in range(limit) for x in range(limit)]


@pytest.mark.parametrize(("fill", "mode"), [("reflect", "reflect"), ("zero", "constant")])
def test_shift_is_a_window_of_the_padded_image(fill: str, mode: str) -> None:
    images = _batch(count=16, side=8)
    out = RandomShift(3, fill)(images, _generator())
    assert out.shape == images.shape
    offsets = set()
    for image, result in zip(images, out, strict=True):
        windows = _windows(F.pad(image[None], (3, 3, 3, 3), mode=mode)[0], 8)
        matches = [k for k, window in enumerate(windows) if torch.equal(window, result)]
        assert matches, "the output is not a crop of the padded input"
        offsets.add(matches[0])
    assert len(offsets) > 1


def test_cutout_zeroes_one_square_and_nothing_else() -> None:
    images = _batch(count=64, channels=2, side=12) + 10  # no zeros before cutout
    out = Cutout(4)(images, _generator())
    for image, result in zip(images, out, strict=True):
        zeroed = (result == 0).all(dim=0)
        assert torch.equal(result[:, ~zeroed], image[:, ~zeroed])
        rows, cols = zeroed.nonzero(as_tuple=True)
        if len(rows):  # a square clipped by the border at most
            assert rows.max() - rows.min() < 4 and cols.max() - cols.min() < 4
            assert zeroed.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert (out == 0).all(dim=1).flatten(1).sum(1).max() == 16


def test_jitter_is_an_affine_change_of_each_image_about_its_mean() -> None:
    images = _batch(count=8)
    out = ColorJitter(0.4)(images, _generator())
    for image, result in zip(images, out, strict=True):
        centred_in = image - image.mean()
        contrast = (result - result.mean()).norm() / centred_in.norm()
        assert 0.6 - 1e-5 <= contrast <= 1.4 + 1e-5
        torch.testing.assert_close(result - result.mean(), contrast * centred_in)
        assert abs(result.mean() - image.mean()) <= 0.4 + 1e-5


def test_multi_scale_resizes_each_batch_to_a_listed_side() -> None:
    transform = MultiScale((6, 8, 10))
    generator = _generator()
    sides = {transform(_batch(count=2), generator).shape[-1] for _ in range(30)}
    assert sides == {6, 8, 10}
    images = _batch(count=2, side=10)
    out = MultiScale((5,))(images, generator)
    expected = F.interpolate(images, size=(5, 5), mode="bilinear", antialias=True)
    torch.testing.assert_close(out, expected)


def test_specs_parse_to_canonical_names() -> None:
    augment = parse_augment(["flip", "crop", "translate:3", "cutout", "jitter:0.25"])
    assert augment.specs == ["flip", "crop:4", "translate:3", "cutout:8", "jitter:0.25"]
    assert parse_augment("").specs == [] and not parse_augment("")


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("rotate", UnknownNameError, "unknown augmentation 'rotate'; choose one of: crop"),
        ("crop:x", OptionError, r"'crop:x' needs an integer \(e.g. crop:4\)"),
        ("crop:0", OptionError, "must be positive"),
        ("jitter:2", OptionError, "between 0 and 1"),
        ("flip:3", OptionError, "takes no argument"),
    ],
)
def test_bad_specs_are_refused(spec: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        parse_augment(spec)


def test_reflect_padding_must_fit_the_images() -> None:
    parse_augment("crop:4").check((1, 12, 12))
    with pytest.raises(OptionError, match="use a padding below 4"):
        parse_augment("crop:4").check((1, 4, 4))
