"""Data augmentation on whole normalized batches, on the device that holds them.

Each transform takes `(images, generator)` and draws every random number from the CPU
`generator` the `BatchLoader` seeds per epoch, so an epoch's augmentation is reproducible (and
resuming is exact) on any device. Per-image parameters are drawn as small CPU tensors and
moved once per batch; nothing loops over images in Python.

Specs are strings: `flip`, `crop[:padding]`, `translate[:pixels]`, `cutout[:size]`,
`jitter[:strength]`, combined with commas (`flip,crop:4`). `MultiScale` resizes a whole batch
to a size drawn from a list (multi-scale training).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnlab.errors import OptionError, UnknownNameError


def _uniform(count: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return torch.rand(count, generator=generator) * (high - low) + low


def _beside(values: Tensor, images: Tensor) -> Tensor:
    """CPU-drawn parameters moved next to `images`; `non_blocking`, so the host never waits
    for the GPU (a blocking host-to-device copy synchronizes the stream)."""
    return values.to(images.device, non_blocking=True)


@dataclass(frozen=True)
class HorizontalFlip:
    """Mirror each image left-right with probability 1/2."""

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        flip = _beside(torch.rand(len(images), generator=generator) < 0.5, images)
        return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)

    @property
    def spec(self) -> str:
        return "flip"


@dataclass(frozen=True)
class RandomShift:
    """Shift each image by up to `pixels` in both directions, keeping its size.

    `fill="reflect"` is the random crop of the CIFAR recipes (reflect-pad, then crop back to
    the original size, as airbench does); `fill="zero"` is a translation that brings in zeros,
    i.e. the dataset mean once normalized.
    """

    pixels: int
    fill: str = "reflect"

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        count, _, height, width = images.shape
        device = images.device
        offsets = _beside(
            torch.randint(0, 2 * self.pixels + 1, (2, count), generator=generator), images
        )
        rows = offsets[0, :, None] + torch.arange(height, device=device)
        cols = offsets[1, :, None] + torch.arange(width, device=device)
        mode = "reflect" if self.fill == "reflect" else "constant"
        padded = F.pad(images, (self.pixels,) * 4, mode=mode)
        batch = torch.arange(count, device=device)[:, None, None]
        # Advanced indices around a slice put their dimensions first: (N, H, W, C).
        shifted = padded[batch, :, rows[:, :, None], cols[:, None, :]]
        return shifted.permute(0, 3, 1, 2)

    @property
    def spec(self) -> str:
        return f"{'crop' if self.fill == 'reflect' else 'translate'}:{self.pixels}"

    def check(self, image_shape: Sequence[int]) -> None:
        if self.fill == "reflect" and self.pixels >= min(image_shape[1:]):
            raise OptionError(
                f"augmentation '{self.spec}' pads by more than the {image_shape[1]}x"
                f"{image_shape[2]} images allow; use a padding below {min(image_shape[1:])}"
            )


@dataclass(frozen=True)
class Cutout:
    """Zero (the mean, once normalized) one `size`x`size` square per image (DeVries & Taylor
    2017); the square's centre is uniform over the image, so it may stick out of the border."""

    size: int

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        count, _, height, width = images.shape
        device = images.device
        centre_y = torch.randint(0, height, (count,), generator=generator)
        centre_x = torch.randint(0, width, (count,), generator=generator)
        top, left = _beside(torch.stack((centre_y, centre_x)) - self.size // 2, images)
        rows = torch.arange(height, device=device)
        cols = torch.arange(width, device=device)
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + self.size)
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + self.size)
        square = in_rows[:, :, None] & in_cols[:, None, :]
        return images.masked_fill(square[:, None], 0.0)

    @property
    def spec(self) -> str:
        return f"cutout:{self.size}"


@dataclass(frozen=True)
class ColorJitter:
    """Random contrast about each image's mean (factor in 1 ± strength) and a brightness
    shift (± strength, in units of the dataset's standard deviation)."""

    strength: float

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        count = len(images)
        contrast = _uniform(count, 1 - self.strength, 1 + self.strength, generator)
        brightness = _uniform(count, -self.strength, self.strength, generator)
        contrast = _beside(contrast.to(images.dtype), images).view(-1, 1, 1, 1)
        brightness = _beside(brightness.to(images.dtype), images).view(-1, 1, 1, 1)
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        return (images - mean) * contrast + mean + brightness

    @property
    def spec(self) -> str:
        return f"jitter:{self.strength:g}"


@dataclass(frozen=True)
class MultiScale:
    """Resize the whole batch to a side drawn from `sizes` (bilinear, antialiased)."""

    sizes: tuple[int, ...]

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        side = self.sizes[int(torch.randint(len(self.sizes), (1,), generator=generator))]
        if images.shape[-2:] == (side, side):
            return images
        return F.interpolate(
            images, size=(side, side), mode="bilinear", antialias=True, align_corners=False
        )

    @property
    def spec(self) -> str:
        return f"multi-scale:{','.join(map(str, self.sizes))}"


# name -> (builder from the spec's argument, argument type, default argument)
_AUGMENTATIONS = {
    "flip": (lambda _: HorizontalFlip(), None, None),
    "crop": (lambda pixels: RandomShift(pixels, "reflect"), int, 4),
    "translate": (lambda pixels: RandomShift(pixels, "zero"), int, 2),
    "cutout": (Cutout, int, 8),
    "jitter": (ColorJitter, float, 0.2),
}


class BatchAugment:
    """A sequence of batch transforms applied in order (the `BatchLoader`'s `augment`)."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = tuple(transforms)

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        for transform in self.transforms:
            images = transform(images, generator)
        return images

    def __bool__(self) -> bool:
        return bool(self.transforms)

    def __repr__(self) -> str:
        return f"BatchAugment({', '.join(self.specs)})"

    @property
    def specs(self) -> list[str]:
        """The canonical spec of each transform (`crop` reads back as `crop:4`)."""
        return [transform.spec for transform in self.transforms]

    def check(self, image_shape: Sequence[int]) -> None:
        """Raise `OptionError` if a transform cannot apply to images of `image_shape` (C, H, W)."""
        for transform in self.transforms:
            if hasattr(transform, "check"):
                transform.check(image_shape)


def parse_augment(specs: str | Iterable[str]) -> BatchAugment:
    """Build the transforms named by `specs`: `"flip,crop:4"` or `["flip", "crop:4"]`."""
    if isinstance(specs, str):
        specs = specs.split(",")
    transforms = []
    for spec in (s.strip() for s in specs):
        if not spec:
            continue
        name, _, argument = spec.partition(":")
        if name not in _AUGMENTATIONS:
            raise UnknownNameError("augmentation", name, _AUGMENTATIONS)
        build, kind, default = _AUGMENTATIONS[name]
        transforms.append(build(_argument(spec, kind, argument, default)))
    return BatchAugment(transforms)


def _argument(spec: str, kind: type | None, text: str, default: float | None) -> float | None:
    """The numeric argument of `spec` (after the colon), or the default when there is none."""
    if kind is None:
        if text:
            raise OptionError(f"augmentation '{spec}' takes no argument")
        return None
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        example = f"{spec.partition(':')[0]}:{default}"
        raise OptionError(f"augmentation '{spec}' needs {expected} (e.g. {example})") from None
    if value <= 0 or (kind is float and value >= 1):
        limit = "between 0 and 1" if kind is float else "positive"
        raise OptionError(f"augmentation '{spec}': the argument must be {limit}")
    return value
