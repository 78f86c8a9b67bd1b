"""AlexNet family: torchvision parity, the 2012 paper's layers, LRN and init, ZFNet's shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision_parity import assert_matches_torchvision

from cnnlab.errors import InputSizeError
from cnnlab.models import check_input_size, count_parameters, create_model, min_input_size
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
