"""Normalization statistics: the exact per-channel pixel mean and std of a uint8 image tensor.

`channel_mean_std` is the one place normalization constants come from: a single streaming pass
over the uint8 pixels that accumulates each channel's sum and sum of squares exactly, so the
result is the true mean/std of all pixels (not a mean of per-image statistics) and does not depend
on how the pass is chunked.
"""

from __future__ import annotations

import math

import torch

from cnnlab.errors import DataError

_PIXELS_PER_CHUNK = 1 << 22  # float32 copies of about 16 MB per step
_ROW = 256  # 256 * 255**2 < 2**24: a float32 sum of 256 squared pixels is an exact integer


def channel_mean_std(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 `(N, C, H, W)` images, on [0, 1]."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 (N, C, H, W) images, got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise DataError("cannot measure the mean and std of an empty split")
    count, channels, height, width = images.shape
    per_chunk = max(1, _PIXELS_PER_CHUNK // (channels * height * width))
    sums, squares = [0] * channels, [0] * channels
    for start in range(0, count, per_chunk):
        pixels = images[start : start + per_chunk].transpose(0, 1).reshape(channels, -1)
        for channel, (total, square) in enumerate(_exact_sums(pixels)):
            sums[channel] += total
            squares[channel] += square
    pixels = count * height * width
    mean = tuple(total / (pixels * 255) for total in sums)
    # n^2 var = n * sum(x^2) - (sum x)^2, in Python integers: exact, no cancellation.
    std = tuple(
        math.sqrt(pixels * square - total * total) / (pixels * 255)
        for total, square in zip(sums, squares, strict=True)
    )
    return mean, std


def _exact_sums(pixels: torch.Tensor) -> list[tuple[int, int]]:
    """(sum, sum of squares) of each row of uint8 `(C, P)` pixels, as exact integers.

    Float32 sums over rows of 256 pixels are exact and fast (contiguous, vectorized); they are
    added up in float64, exact below 2**53, i.e. for chunks of up to 10**11 pixels.
    """
    whole = pixels.shape[1] // _ROW * _ROW
    rows = pixels[:, :whole].reshape(len(pixels), -1, _ROW).float()
    rest = pixels[:, whole:].double()
    sums = rows.sum(2).sum(1, dtype=torch.float64) + rest.sum(1)
    squares = rows.square_().sum(2).sum(1, dtype=torch.float64) + rest.square_().sum(1)
    return [(int(total), int(square)) for total, square in zip(sums, squares, strict=True)]
