"""VGG: torchvision parity, Table 1's depths, torchvision's initialization, small inputs, heads,
and the CIFAR form (`small_input=True`)."""

from __future__ import annotations

import itertools

import pytest
import torch
from small_inputs import (
    SMALL_IMAGES,
    assert_small_input_takes_28_pixel_images,
    assert_small_input_trains_and_evaluates,
)
from torch import nn
from torchvision_parity import assert_matches_torchvision

from cnnlab.errors import InputSizeError
from cnnlab.models import (
    check_input_size,
    count_parameters,
    create_model,
    min_input_size,
)
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


# The CIFAR form: 28x28 grayscale and 32x32 RGB images, as in MNIST and CIFAR-10.


@pytest.mark.parametrize(("channels", "side"), SMALL_IMAGES)
@pytest.mark.parametrize("name", VGGS)
def test_small_input_trains_and_evaluates_on_small_images(
    name: str, channels: int, side: int
) -> None:
    assert_small_input_trains_and_evaluates(name, channels, side)


@pytest.mark.parametrize("name", VGGS)
def test_small_input_is_an_option_and_takes_28_pixel_images(name: str) -> None:
    assert_small_input_takes_28_pixel_images(name)


@pytest.mark.parametrize(("side", "pooled"), [(32, [16, 8, 4, 2, 1]), (28, [14, 7, 4, 2, 1])])
def test_small_input_pools_round_up_to_1x1_maps(side: int, pooled: list[int]) -> None:
    model = create_model("vgg16_bn", num_classes=10, small_input=True).eval()
    sizes: list[int] = []
    for pool in model.features:
        if isinstance(pool, nn.MaxPool2d):
            pool.register_forward_hook(lambda m, i, out: sizes.append(out.shape[-1]))
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, side, side))
    assert sizes == pooled
    assert features.shape == (2, 512, 1, 1)
    assert model.avgpool(features).shape == (2, 512, 1, 1)  # global: nothing is copied


@pytest.mark.parametrize(("width", "hidden"), [(1.0, 512), (0.5, 256)])
def test_small_input_hidden_layers_are_512_times_width(width: float, hidden: int) -> None:
    with torch.device("meta"):
        model = create_model("vgg11", num_classes=10, small_input=True, width=width)
    linears = [
        (m.in_features, m.out_features) for m in model.classifier if isinstance(m, nn.Linear)
    ]
    assert linears == [(hidden, hidden), (hidden, hidden), (hidden, 10)]


def _conv_params(channels: list[int], batch_norm: bool) -> int:
    """3x3 convolutions with biases between consecutive `channels`, and BN's scale and shift."""
    pairs = itertools.pairwise(channels)
    return sum(9 * c_in * c_out + c_out + (2 * c_out if batch_norm else 0) for c_in, c_out in pairs)


# fc6 and fc7: 512 -> 512 -> 512 (weights and biases), then the 10-class layer.
SMALL_HEAD = (512 * 512 + 512) * 2 + 512 * 10 + 10
# The convolutions' output channels, written out from Table 1 (configurations A and D).
VGG11_CHANNELS = [3, 64, 128, 256, 256, 512, 512, 512, 512]
VGG16_CHANNELS = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


@pytest.mark.parametrize(
    ("name", "channels", "batch_norm", "total"),
    [("vgg11_bn", VGG11_CHANNELS, True, 9_756_426), ("vgg16", VGG16_CHANNELS, False, 15_245_130)],
)
def test_small_input_parameter_counts(
    name: str, channels: list[int], batch_norm: bool, total: int
) -> None:
    expected = _conv_params(channels, batch_norm) + SMALL_HEAD
    assert count_parameters(name, num_classes=10, small_input=True) == expected == total


def test_small_input_keeps_the_module_names_and_changes_only_the_head() -> None:
    with torch.device("meta"):
        plain = create_model("vgg13_bn", num_classes=10).state_dict()
        small = create_model("vgg13_bn", num_classes=10, small_input=True).state_dict()
    assert plain.keys() == small.keys()
    changed = {key for key in plain if plain[key].shape != small[key].shape}
    fc6_fc7 = {f"classifier.{index}.{kind}" for index in (0, 3) for kind in ("weight", "bias")}
    assert changed == fc6_fc7 | {"classifier.6.weight"}


def test_small_input_head_features_and_reset_classifier() -> None:
    model = create_model("vgg11_bn", num_classes=10, in_channels=1, small_input=True).eval()
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        features = model.forward_features(images)
        assert model.forward_head(features, pre_logits=True).shape == (2, 512)
        model.reset_classifier(7)
        assert model.get_classifier() is model.classifier[6]
        assert model(images).shape == (2, 7)
        model.reset_classifier(0)
        assert model(images).shape == (2, model.num_features) == (2, 512)
