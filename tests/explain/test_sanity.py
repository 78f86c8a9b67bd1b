"""Model randomization and deletion/insertion: the pieces, and the report's tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.explain.sanity import (
    RANDOM_ORDER,
    probability_curves,
    randomization_units,
    rank_correlation,
    sanity_checks,
    sanity_csv,
    sanity_markdown,
)
from tests.explain.nets import TinyGapNet


def test_units_are_blocks_or_top_level_layers_in_declaration_order() -> None:
    assert randomization_units(TinyGapNet()) == ["block1.0", "block2.0", "block2.1", "fc"]
    resnet = cnnlab.create_model("resnet20", num_classes=3)
    units = randomization_units(resnet)
    assert units[:3] == ["conv1", "bn1", "layer1.0"] and units[-2:] == ["layer3.2", "fc"]
    lenet = randomization_units(cnnlab.create_model("lenet5_modern"))
    assert lenet[0] == "features.c1" and lenet[-1] == "classifier.output"


def test_rank_correlation() -> None:
    ramp = np.arange(16.0).reshape(4, 4)
    assert rank_correlation(ramp, ramp**3) == pytest.approx(1.0)
    assert rank_correlation(ramp, -ramp) == pytest.approx(-1.0)
    assert rank_correlation(ramp, np.zeros((4, 4))) == 0.0


def test_probability_curves_start_and_end_where_they_must(left_half_net) -> None:
    model, images = left_half_net
    with torch.no_grad():
        full = model(images).softmax(dim=1)[:, 1].mean().item()
        empty = model(torch.zeros_like(images)).softmax(dim=1)[:, 1].mean().item()
    maps = np.random.default_rng(0).random((len(images), *images.shape[-2:]))
    targets = [1] * len(images)
    deletion = probability_curves(model, images, maps, targets, insert=False)
    insertion = probability_curves(model, images, maps, targets, insert=True)
    assert deletion[0] == pytest.approx(full, abs=1e-6)
    assert deletion[-1] == pytest.approx(empty, abs=1e-6)
    assert insertion[0] == pytest.approx(empty, abs=1e-6)
    assert insertion[-1] == pytest.approx(full, abs=1e-6)


def test_gradcam_beats_a_random_pixel_order(left_half_net) -> None:
    model, images = left_half_net
    report = sanity_checks(model, images, ["gradcam", "saliency"], target=1)
    deletion = {name: report.area(curve) for name, curve in report.deletion.items()}
    insertion = {name: report.area(curve) for name, curve in report.insertion.items()}
    assert deletion["gradcam"] < deletion[RANDOM_ORDER] - 0.1
    assert insertion["gradcam"] > insertion[RANDOM_ORDER] + 0.1
    assert len(report.randomization) == 4
    markdown = sanity_markdown(report)
    assert "| 1 | fc | " in markdown and "| random order | " in markdown
    lines = sanity_csv(report).splitlines()
    assert lines[0] == "test,step,layer,method,value"
    assert len(lines) == 1 + 4 * 2 + 3 * 2
    assert lines[1].startswith("randomization,1,fc,gradcam,")
