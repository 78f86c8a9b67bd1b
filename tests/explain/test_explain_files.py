"""Explaining files: batches joined into one explanation, figure names, grids split by rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from explain_nets import TinyGapNet

from cnnlab.explain import explain, files
from cnnlab.explain.files import ExplainedFiles, explanation_figures, output_stems
from cnnlab.explain.inputs import ImageFiles


def test_batches_join_into_the_same_explanation(
    net: TinyGapNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = torch.randn(5, 1, 8, 8)
    monkeypatch.setattr(files, "BATCH_SIZE", 2)
    joined = files._explain_in_batches(net, images, "gradcam", "predicted", "auto")
    whole = explain(net, images)
    np.testing.assert_allclose(joined.maps, whole.maps, atol=1e-6)
    np.testing.assert_allclose(joined.probabilities, whole.probabilities, rtol=1e-5)
    assert joined.targets == whole.targets and joined.layer == whole.layer == "block2"


def test_output_stems_are_numbered_only_when_names_repeat() -> None:
    assert output_stems([Path("a/x.png"), Path("b/y.jpg")]) == ["x", "y"]
    assert output_stems([Path("a/x.png"), Path("b/x.png")]) == ["000-x", "001-x"]


def test_comparison_grids_hold_at_most_grid_rows_images(
    net: TinyGapNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = torch.randn(3, 1, 8, 8)
    pixels = torch.randint(0, 255, (3, 1, 8, 8), dtype=torch.uint8)
    paths = [Path(f"digit{index}.png") for index in range(3)]
    methods = ("gradcam", "saliency")
    result = ExplainedFiles(
        ImageFiles(paths, pixels, inputs, []),
        ["zero", "one", "two"],
        {method: explain(net, inputs, method) for method in methods},
    )
    monkeypatch.setattr(files, "GRID_ROWS", 2)
    names = [name for name, _ in explanation_figures(result, at_input_size=True)]
    per_image = [f"digit{index}.{method}.png" for index in range(3) for method in methods]
    assert names == [*per_image, "comparison-1.png", "comparison-2.png"]
