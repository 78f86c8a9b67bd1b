"""AlexNet family: torchvision parity, the 2012 paper's layers, LRN and init, ZFNet's shapes, and
the small-input form (`small_input=True`)."""

from __future__ import annotations

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
from cnnlab.models.alexnet import local_response_norm


def _output_shapes(name: str, side: int, **options: object) -> list[tuple[str, tuple[int, ...]]]:
    """(layer type, output shape without the batch) of every conv, LRN, pool and linear layer."""
    recorded = []
    with torch.device("meta"):
        model = create_model(name, **options).eval()
        for layer in [*model.features, *model.classifier]:
            if not isinstance(layer, (nn.ReLU, nn.Dropout)):
                layer.register_forward_hook(
                    lambda module, _, out: recorded.append(
                        (type(module).__name__, tuple(out.shape[1:]))
                    )
                )
        model(torch.empty(1, 3, side, side))
    return recorded


def test_alexnet_matches_torchvision() -> None:
    assert_matches_torchvision("alexnet")
    assert count_parameters("alexnet") == 61_100_840


def test_alexnet_runs_at_torchvision_minimum() -> None:
    assert min_input_size("alexnet") == 63  # torchvision's AlexNet_Weights meta "min_size"


@pytest.mark.parametrize(("two_towers", "parameters"), [(False, 62_378_344), (True, 60_965_224)])
def test_alexnet_original_parameter_counts(two_towers: bool, parameters: int) -> None:
    assert count_parameters("alexnet_original", two_towers=two_towers) == parameters


def test_alexnet_original_layer_shapes() -> None:
    assert _output_shapes("alexnet_original", 227) == [
        ("Conv2d", (96, 55, 55)),
        ("LocalResponseNorm", (96, 55, 55)),
        ("MaxPool2d", (96, 27, 27)),
        ("Conv2d", (256, 27, 27)),
        ("LocalResponseNorm", (256, 27, 27)),
        ("MaxPool2d", (256, 13, 13)),
        ("Conv2d", (384, 13, 13)),
        ("Conv2d", (384, 13, 13)),
        ("Conv2d", (256, 13, 13)),
        ("MaxPool2d", (256, 6, 6)),
        ("Linear", (4096,)),
        ("Linear", (4096,)),
        ("Linear", (1000,)),
    ]


def test_alexnet_original_layer_order() -> None:
    """LRN follows the first two ReLUs; pooling is overlapping; dropout on fc6/fc7 outputs."""
    with torch.device("meta"):
        model = create_model("alexnet_original")
    kinds = [type(layer) for layer in model.features]
    conv, relu, lrn, pool = nn.Conv2d, nn.ReLU, nn.LocalResponseNorm, nn.MaxPool2d
    assert kinds == [conv, relu, lrn, pool, conv, relu, lrn, pool] + [conv, relu] * 3 + [pool]
    assert all(
        (layer.kernel_size, layer.stride) == (3, 2)
        for layer in model.features
        if isinstance(layer, pool)
    )
    linear, dropout = nn.Linear, nn.Dropout
    assert [type(layer) for layer in model.classifier] == [linear, relu, dropout] * 2 + [linear]


def test_local_response_norm_follows_the_paper_formula() -> None:
    # b_i = a_i / (k + alpha * sum_{|j - i| <= n/2} a_j^2) ** beta, n=5, k=2, alpha=1e-4, beta=0.75
    activations = 40 * torch.rand(2, 9, 3, 3)
    expected = torch.empty_like(activations)
    for i in range(9):
        window = activations[:, max(0, i - 2) : i + 3]
        expected[:, i] = activations[:, i] / (2 + 1e-4 * window.pow(2).sum(1)) ** 0.75
    torch.testing.assert_close(local_response_norm()(activations), expected)


def test_two_towers_group_conv2_conv4_conv5() -> None:
    with torch.device("meta"):
        model = create_model("alexnet_original", two_towers=True)
    groups = [layer.groups for layer in model.features if isinstance(layer, nn.Conv2d)]
    assert groups == [1, 2, 1, 2, 2]


def test_alexnet_original_uses_the_paper_initialization() -> None:
    model = create_model("alexnet_original", num_classes=10)
    convs = [layer for layer in model.features if isinstance(layer, nn.Conv2d)]
    linears = [layer for layer in model.classifier if isinstance(layer, nn.Linear)]
    assert [conv.bias.unique().tolist() for conv in convs] == [[0.0], [1.0], [0.0], [1.0], [1.0]]
    assert [linear.bias.unique().tolist() for linear in linears] == [[1.0], [1.0], [0.0]]
    for layer in [convs[2], linears[1]]:
        assert layer.weight.mean().item() == pytest.approx(0.0, abs=1e-3)
        assert layer.weight.std().item() == pytest.approx(0.01, rel=0.02)


def test_zfnet_layer_shapes_and_first_layer() -> None:
    assert _output_shapes("zfnet", 224) == [
        ("Conv2d", (96, 110, 110)),
        ("LocalResponseNorm", (96, 110, 110)),
        ("MaxPool2d", (96, 55, 55)),
        ("Conv2d", (256, 26, 26)),
        ("LocalResponseNorm", (256, 26, 26)),
        ("MaxPool2d", (256, 13, 13)),
        ("Conv2d", (512, 13, 13)),
        ("Conv2d", (1024, 13, 13)),
        ("Conv2d", (512, 13, 13)),
        ("MaxPool2d", (512, 6, 6)),
        ("Linear", (4096,)),
        ("Linear", (4096,)),
        ("Linear", (1000,)),
    ]
    with torch.device("meta"):
        first = create_model("zfnet").features[0]
    assert (first.out_channels, first.kernel_size, first.stride) == (96, (7, 7), (2, 2))


@pytest.mark.parametrize("name", ["alexnet", "alexnet_original", "zfnet"])
def test_small_inputs_are_refused_with_the_smallest_size(name: str) -> None:
    with pytest.raises(InputSizeError, match=r"cannot take 32x32 inputs; the smallest"):
        check_input_size(name, (3, 32, 32))


def test_grayscale_input_and_reset_classifier() -> None:
    model = create_model("alexnet", num_classes=10, in_channels=1, dropout=0.0).eval()
    images = torch.randn(2, 1, 63, 63)
    with torch.no_grad():
        features = model.forward_features(images)
        assert model.forward_head(features, pre_logits=True).shape == (2, 4096)
        assert model(images).shape == (2, 10)

        model.reset_classifier(7)
        assert model.get_classifier() is model.classifier[6]
        logits = model(images)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


# The small-input form: 28x28 grayscale and 32x32 RGB images, as in MNIST and CIFAR-10.
FAMILY = ["alexnet", "alexnet_original", "zfnet"]


@pytest.mark.parametrize(("channels", "side"), SMALL_IMAGES)
@pytest.mark.parametrize("name", FAMILY)
def test_small_input_trains_and_evaluates_on_small_images(
    name: str, channels: int, side: int
) -> None:
    assert_small_input_trains_and_evaluates(name, channels, side)


@pytest.mark.parametrize("name", FAMILY)
def test_small_input_is_an_option_and_takes_28_pixel_images(name: str) -> None:
    assert_small_input_takes_28_pixel_images(name)


@pytest.mark.parametrize(
    ("name", "fc6", "maps"), [("alexnet", 1, 256), ("alexnet_original", 0, 256), ("zfnet", 0, 512)]
)
def test_small_input_changes_only_the_first_convolution_and_fc6(
    name: str, fc6: int, maps: int
) -> None:
    with torch.device("meta"):
        plain = create_model(name).state_dict()
        model = create_model(name, small_input=True)
    small = model.state_dict()
    assert plain.keys() == small.keys()
    changed = {key for key in plain if plain[key].shape != small[key].shape}
    assert changed == {"features.0.weight", f"classifier.{fc6}.weight"}
    first = model.features[0]
    assert (first.kernel_size, first.stride, first.padding) == ((3, 3), (1, 1), (1, 1))
    assert model.classifier[fc6].in_features == maps  # global pooling: one value per map


def test_small_input_alexnet_layer_shapes_at_32_and_28() -> None:
    at_32 = _output_shapes("alexnet", 32, small_input=True)
    assert at_32 == [
        ("Conv2d", (64, 32, 32)),
        ("MaxPool2d", (64, 15, 15)),
        ("Conv2d", (192, 15, 15)),
        ("MaxPool2d", (192, 7, 7)),
        ("Conv2d", (384, 7, 7)),
        ("Conv2d", (256, 7, 7)),
        ("Conv2d", (256, 7, 7)),
        ("MaxPool2d", (256, 3, 3)),
        ("Linear", (4096,)),
        ("Linear", (4096,)),
        ("Linear", (1000,)),
    ]
    pooled = [shape for kind, shape in _output_shapes("alexnet", 28, small_input=True)]
    assert [pooled[i] for i in (1, 3, 7)] == [(64, 13, 13), (192, 6, 6), (256, 2, 2)]


def test_small_input_zfnet_ends_in_1x1_maps() -> None:
    for side in (28, 32):
        shapes = _output_shapes("zfnet", side, small_input=True)
        assert shapes[0] == ("Conv2d", (96, side, side))
        assert shapes[9] == ("MaxPool2d", (512, 1, 1))


def _conv(c_in: int, c_out: int, kernel: int) -> int:
    return c_in * c_out * kernel * kernel + c_out


def _linear(fan_in: int, fan_out: int) -> int:
    return fan_in * fan_out + fan_out


@pytest.mark.parametrize(
    ("name", "expected", "total"),
    [
        (
            "alexnet",
            _conv(3, 64, 3) + _conv(64, 192, 5) + _conv(192, 384, 3) + _conv(384, 256, 3)
            + _conv(256, 256, 3) + _linear(256, 4096) + _linear(4096, 4096) + _linear(4096, 10),
            20_323_146,
        ),
        (
            "zfnet",
            _conv(3, 96, 3) + _conv(96, 256, 5) + _conv(256, 512, 3) + _conv(512, 1024, 3)
            + _conv(1024, 512, 3) + _linear(512, 4096) + _linear(4096, 4096) + _linear(4096, 10),
            30_159_754,
        ),
    ],
)  # fmt: skip
def test_small_input_parameter_counts(name: str, expected: int, total: int) -> None:
    assert count_parameters(name, num_classes=10, small_input=True) == expected == total


def test_small_input_keeps_width_and_two_towers() -> None:
    with torch.device("meta"):
        narrow = create_model("alexnet", num_classes=10, small_input=True, width=0.5)
        towers = create_model("alexnet_original", small_input=True, two_towers=True)
    linears = [
        (m.in_features, m.out_features) for m in narrow.classifier if isinstance(m, nn.Linear)
    ]
    assert linears == [(128, 2048), (2048, 2048), (2048, 10)]
    assert [m.groups for m in towers.features if isinstance(m, nn.Conv2d)] == [1, 2, 1, 2, 2]


def test_small_input_head_features_and_reset_classifier() -> None:
    model = create_model("zfnet", num_classes=10, in_channels=1, small_input=True).eval()
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        features = model.forward_features(images)
        assert model.forward_head(features, pre_logits=True).shape == (2, 4096)
        model.reset_classifier(7)
        assert model.get_classifier() is model.classifier[6]
        assert model(images).shape == (2, 7)
        model.reset_classifier(0)
        assert model(images).shape == (2, model.num_features) == (2, 4096)
