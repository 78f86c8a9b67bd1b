"""Tests that can fail: maps that must point at the evidence, and at nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.explain import explain
from cnnlab.explain.sanity import randomization_test
from tests.explain.nets import CroppingNet, randomized_batch_norm


def test_gradcam_puts_the_heat_on_the_half_the_class_depends_on(left_half_net) -> None:
    model, images = left_half_net
    maps = explain(model, images, "gradcam", target=1).maps
    half = maps.shape[-1] // 2
    assert maps[..., :half].sum() / maps.sum() >= 0.8
    assert np.median(maps[..., :half].sum(axis=(1, 2)) / maps.sum(axis=(1, 2))) >= 0.8


@pytest.mark.parametrize("method", ["saliency", "smoothgrad", "integrated-gradients"])
def test_pixels_that_cannot_reach_the_output_get_exactly_zero(method: str) -> None:
    model = randomized_batch_norm(CroppingNet(keep=5))
    maps = explain(model, torch.randn(2, 1, 10, 10), method).maps
    assert (maps[..., 5:] == 0).all()
    assert (maps[..., :5] > 0).mean() > 0.5


def test_gradcam_decorrelates_as_layers_are_randomized(left_half_net) -> None:
    model, images = left_half_net
    trained = explain(model, images, "gradcam", target=1)
    rows = randomization_test(model, images, {"gradcam": trained})
    assert [unit for unit, _ in rows] == ["fc", "block2.1", "block2.0", "block1.0"]
    correlations = [values["gradcam"] for _, values in rows]
    assert max(correlations) < 0.5, correlations
    # The trained model itself is untouched: its maps are the same as before.
    np.testing.assert_array_equal(explain(model, images, "gradcam", target=1).maps, trained.maps)
