"""Promises over the whole registry: every network takes 28x28 grayscale digits (in its
small-input form where it has one), and timm's: `reset_classifier(0)` gives pooled features,
one pattern rule for `list_models` and `cnnlab models`, summaries whose parameter column adds
up."""

from __future__ import annotations

import re

import pytest
import torch
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.models import create_model_for_input, list_models, model_info
from cnnlab.summary import summarize

ZOO = [name for name in list_models() if model_info(name).builder.__module__.startswith("cnnlab.")]
# The head API is per network class: one variant of each family (its shortest name) is enough.
FAMILIES = {model_info(n).family: n for n in sorted(ZOO, key=lambda n: (len(n), n), reverse=True)}
# The deepest variants take seconds each even on the meta device.
DEEP = {"resnet101", "resnet110", "resnet152", "resnext101_32x8d", "resnext101_64x4d"}


def _on_meta(name: str) -> torch.nn.Module:
    """The model at its default input size, on the meta device (shapes without weights)."""
    with torch.device("meta"):
        return create_model_for_input(name, model_info(name).input_size, 7).eval()


@pytest.mark.parametrize("name", sorted(set(ZOO) - DEEP))
def test_every_network_classifies_28x28_grayscale_digits(name: str) -> None:
    options = {"small_input": True} if "small_input" in model_info(name).defaults else {}
    torch.manual_seed(0)
    model = create_model_for_input(name, (1, 28, 28), 10, **options).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 28, 28))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(FAMILIES.values()))
def test_reset_classifier_zero_returns_pooled_features(name: str) -> None:
    model = _on_meta(name)
    images = torch.zeros(2, *model_info(name).input_size, device="meta")
    pooled = model.forward_head(model.forward_features(images), pre_logits=True)
    model.reset_classifier(0)
    assert model(images).shape == (2, model.num_features) == pooled.shape
    model.reset_classifier(5)
    assert model(images).shape == (2, 5) and model.num_classes == 5


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in DEEP else n for n in ZOO]
)
def test_summary_parameter_column_sums_to_the_total(name: str) -> None:
    summary = summarize(name, model_info(name).input_size)
    assert sum(layer.params for layer in summary.layers) == summary.params


@pytest.mark.parametrize("pattern", ["vgg", "resnet", "net", "vgg1?", "resnet*", "alexnet"])
def test_list_models_and_the_models_command_agree(pattern: str) -> None:
    shown = CliRunner().invoke(app, ["models", pattern], env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    names = list_models(pattern)
    assert names and re.search(rf"\b{len(names)} models?\b", shown.output)
    assert all(re.search(rf"^\W*{re.escape(name)}\s", shown.output, re.M) for name in names)
