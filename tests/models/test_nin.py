"""Network in Network: no fully connected layer, class maps averaged into logits, heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.errors import InputSizeError
from cnnlab.models import check_input_size, create_model, min_input_size
from cnnlab.models.nin import MLPConv


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("nin", num_classes=10).eval()


def test_no_fully_connected_layer(model: nn.Module) -> None:
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    classifier = model.get_classifier()
    assert isinstance(classifier, nn.Conv2d)
    assert (classifier.kernel_size, classifier.out_channels) == ((1, 1), 10)


def test_mlpconv_blocks_separated_by_pooling_and_dropout(model: nn.Module) -> None:
    blocks = [m for m in model.features if isinstance(m, MLPConv)]
    assert [block[0].kernel_size for block in blocks] == [(11, 11), (5, 5), (3, 3), (3, 3)]
    for block in blocks[:3]:
        convs = [m for m in block if isinstance(m, nn.Conv2d)]
        assert [conv.kernel_size for conv in convs[1:]] == [(1, 1), (1, 1)]
        assert sum(isinstance(m, nn.ReLU) for m in block) == 3
    kinds = [type(m) for m in model.features]
    assert kinds == [MLPConv, nn.MaxPool2d, nn.Dropout] * 3 + [MLPConv]


@pytest.mark.parametrize("size", ["default", "smallest"])
def test_logits_at_default_and_smallest_input(model: nn.Module, size: str) -> None:
    side = 224 if size == "default" else min_input_size("nin")
    with torch.no_grad():
        logits = model(torch.randn(2, 3, side, side))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def test_one_below_smallest_input_is_refused() -> None:
    smallest = min_input_size("nin")
    with pytest.raises(InputSizeError, match=f"smallest it accepts is {smallest}x{smallest}"):
        check_input_size("nin", (3, smallest - 1, smallest - 1))


def test_logits_are_linear_in_the_averaged_features(model: nn.Module) -> None:
    """Classic CAM's premise: logits = W . mean(last maps) + b, signs intact (no final ReLU)."""
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 96, 96))
        pooled = model.forward_head(features, pre_logits=True)
        logits = model.forward_head(features)
    classifier = model.get_classifier()
    torch.testing.assert_close(pooled, features.mean(dim=(2, 3)))
    expected = pooled @ classifier.weight.flatten(1).T + classifier.bias
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    assert (logits < 0).any()


def test_reset_classifier_and_grayscale_input() -> None:
    model = create_model("nin", num_classes=10, in_channels=1).eval()
    model.reset_classifier(7)
    classifier = model.get_classifier()
    assert model.classifier is classifier
    assert (classifier.in_channels, classifier.out_channels) == (1024, 7)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 96, 96)).shape == (2, 7)


def test_dropout_option() -> None:
    with torch.device("meta"):
        model = create_model("nin", dropout=0.3)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3, 0.3]
