"""VGG: torchvision parity, Table 1's depths, torchvision's initialization, small inputs, heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision_parity import assert_matches_torchvision

from cnnlab.errors import InputSizeError
from cnnlab.models import check_input_size, count_parameters, create_model, min_input_size
from cnnlab.models.vgg import CONFIGS, VGG

VGGS = ["vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]


@pytest.mark.slow
@pytest.mark.parametrize("name", VGGS)
def test_matches_torchvision(name: str) -> None:
    assert_matches_torchvision(name)


def test_vgg16_parameter_count() -> None:
    assert count_parameters("vgg16") == 138_357_544


@pytest.mark.parametrize(("name", "depth"), [("vgg11", 11), ("vgg13", 13), ("vgg16", 16)])
def test_depth_counts_weight_layers(name: str, depth: int) -> None:
    with torch.device("meta"):
        model = create_model(name)
    weight_layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weight_layers) == depth
    assert all(conv.kernel_size == (3, 3) for conv in weight_layers if isinstance(conv, nn.Conv2d))


def test_batch_norm_sits_between_each_convolution_and_its_relu() -> None:
    with torch.device("meta"):
        model = create_model("vgg19_bn")
    layers = list(model.features)
    convs = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Conv2d)]
    assert len(convs) == 16
    for i in convs:
        assert isinstance(layers[i + 1], nn.BatchNorm2d)
        assert isinstance(layers[i + 2], nn.ReLU)


def test_initialization_follows_torchvision() -> None:
    model = VGG([32, "M", 64, "M"], batch_norm=True, num_classes=10)
    conv = model.features[4]
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    assert model.classifier[0].weight.std().item() == pytest.approx(0.01, rel=0.02)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            assert torch.all(module.bias == 0)
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1)


def test_dropout_option() -> None:
    with torch.device("meta"):
        model = create_model("vgg11", dropout=0.2)
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert rates == [0.2, 0.2]


def test_smallest_input_is_32_after_five_halvings() -> None:
    assert min_input_size("vgg11") == 32
    check_input_size("vgg16_bn", (3, 32, 32))
    with pytest.raises(InputSizeError, match="smallest it accepts is 32x32"):
        check_input_size("vgg16_bn", (3, 31, 31))


def test_small_grayscale_input_and_reset_classifier() -> None:
    model = VGG(CONFIGS["A"], batch_norm=True, num_classes=10, in_channels=1).eval()
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        features = model.forward_features(images)
        assert features.shape == (2, 512, 1, 1)
        assert model.forward_head(features, pre_logits=True).shape == (2, 4096)
        assert model(images).shape == (2, 10)

        model.reset_classifier(7)
        assert model.get_classifier() is model.classifier[6]
        assert model.classifier[6].out_features == 7
        logits = model(images)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
