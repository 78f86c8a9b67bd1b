"""Network in Network: no fully connected layer, class maps averaged into logits, heads."""

from __future__ import annotations

import pytest
import torch
from small_inputs import assert_small_input_takes_28_pixel_images
from torch import nn

from cnnlab.errors import InputSizeError
from cnnlab.models import check_input_size, count_parameters, create_model, min_input_size
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


# small_input: the paper's CIFAR-10 network (section 4.2, Caffe's "NIN CIFAR10").

# (in channels, out channels, kernel) of conv1, cccp1..cccp5 and cccp6 (the classifier), at 3
# input channels and 10 classes, as the Caffe model lists them.
CIFAR_LAYERS = [
    (3, 192, 5),
    (192, 160, 1),
    (160, 96, 1),
    (96, 192, 5),
    (192, 192, 1),
    (192, 192, 1),
    (192, 192, 3),
    (192, 192, 1),
    (192, 10, 1),
]


@pytest.fixture(scope="module")
def cifar_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("nin", num_classes=10, small_input=True)


def test_small_input_is_the_papers_cifar_network(cifar_model: nn.Module) -> None:
    convs = [m for m in cifar_model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[-1] is cifar_model.get_classifier()
    layers = [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs]
    assert layers == CIFAR_LAYERS
    assert [c.padding[0] for c in convs if c.kernel_size != (1, 1)] == [2, 2, 1]
    kinds = [type(m) for m in cifar_model.features]
    assert kinds == [MLPConv, nn.MaxPool2d, nn.Dropout, MLPConv, nn.AvgPool2d, nn.Dropout, MLPConv]
    pools = [cifar_model.features[1], cifar_model.features[4]]
    assert [(p.kernel_size, p.stride, p.ceil_mode) for p in pools] == [(3, 2, True)] * 2


def test_small_input_parameter_count_is_the_caffe_models(cifar_model: nn.Module) -> None:
    expected = sum(c_in * c_out * k * k + c_out for c_in, c_out, k in CIFAR_LAYERS)
    assert expected == 966_986
    assert sum(p.numel() for p in cifar_model.parameters()) == expected
    assert count_parameters("nin", num_classes=10, small_input=True) == expected


def test_small_input_keeps_the_default_network_unchanged() -> None:
    """The ImageNet network's own count, computed from its layer list (no `small_input`)."""
    layers = [(3, 96, 11), (96, 96, 1), (96, 96, 1), (96, 256, 5), (256, 256, 1), (256, 256, 1)]
    layers += [(256, 384, 3), (384, 384, 1), (384, 384, 1), (384, 1024, 3), (1024, 1024, 1)]
    layers += [(1024, 1000, 1)]
    expected = sum(c_in * c_out * k * k + c_out for c_in, c_out, k in layers)
    assert count_parameters("nin") == count_parameters("nin", small_input=False) == expected


@pytest.mark.parametrize(("channels", "side", "grid"), [(1, 28, 7), (3, 32, 8)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_small_input_forward_and_backward(channels: int, side: int, grid: int, mode: str) -> None:
    """Caffe's rounding-up pools: 32 -> 16 -> 8 (the model's 8x8 average pool), 28 -> 14 -> 7."""
    torch.manual_seed(0)
    model = create_model("nin", num_classes=10, in_channels=channels, small_input=True)
    model.train(mode == "train")
    x = torch.randn(2, channels, side, side)
    assert model.forward_features(x).shape == (2, 192, grid, grid)
    logits = model(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 7])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_small_input_accepts_28x28() -> None:
    assert_small_input_takes_28_pixel_images("nin")


def test_small_input_pre_logits_and_reset_classifier() -> None:
    model = create_model("nin", num_classes=10, small_input=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    assert pooled.shape == (2, 192) and model.num_features == 192
    model.reset_classifier(7)
    classifier = model.get_classifier()
    assert model.classifier is classifier
    layout = (classifier.in_channels, classifier.out_channels, classifier.kernel_size)
    assert layout == (192, 7, (1, 1))
    with torch.no_grad():
        assert model(x).shape == (2, 7)
