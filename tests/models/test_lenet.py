"""LeNet-5: the paper's map sizes and parameter count, the options' effect on shapes, training."""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.errors import InputSizeError, OptionError
from cnnlab.models import check_input_size, create_model, create_model_for_input
from cnnlab.models.lenet import MNIST_MEAN, MNIST_STD


def _map_sides(model: nn.Module, image: torch.Tensor) -> list[int]:
    """Side of the maps after C1, S2, C3 and S4."""
    sides = []
    hooks = [
        model.features.get_submodule(name).register_forward_hook(
            lambda _module, _input, out: sides.append(out.shape[-1])
        )
        for name in ("c1", "s2", "c3", "s4")
    ]
    with torch.no_grad():
        model.eval()(image)
    for hook in hooks:
        hook.remove()
    return sides


@pytest.mark.parametrize(
    ("name", "side"), [("lenet5", 32), ("lenet5", 28), ("lenet5_modern", 32), ("lenet5_modern", 28)]
)
def test_paper_map_sizes_at_32_and_28(name: str, side: int) -> None:
    model = create_model(name, image_size=side)
    assert _map_sides(model, torch.randn(1, 1, side, side)) == [28, 14, 10, 5]


def test_faithful_network_uses_sigmoid_and_average_pooling() -> None:
    kinds = {type(m) for m in create_model("lenet5").modules()}
    assert {nn.Sigmoid, nn.AvgPool2d} <= kinds
    assert not kinds & {nn.ReLU, nn.MaxPool2d, nn.BatchNorm1d, nn.BatchNorm2d}


def test_modern_network_uses_relu_max_pooling_and_batch_norm() -> None:
    modules = list(create_model("lenet5_modern").modules())
    kinds = {type(m) for m in modules}
    assert {nn.ReLU, nn.MaxPool2d} <= kinds
    assert not kinds & {nn.Sigmoid, nn.AvgPool2d}
    assert sum(isinstance(m, nn.BatchNorm2d) for m in modules) == 2
    assert sum(isinstance(m, nn.BatchNorm1d) for m in modules) == 2


def test_parameter_count_per_layer() -> None:
    model = create_model("lenet5")
    per_layer = {
        name: sum(p.numel() for p in module.parameters())
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    }
    assert per_layer == {
        "features.c1": 156,
        "features.c3": 2_416,
        "classifier.c5": 48_120,
        "classifier.f6": 10_164,
        "classifier.output": 850,
    }
    assert sum(p.numel() for p in model.parameters()) == 61_706


@pytest.mark.parametrize(
    ("side", "expected"),
    [
        (32, [30, 10, 8, 2]),  # 3x3 convolutions, 3x3 pooling, no padding at the paper's 32x32
        (28, [28, 9, 7, 2]),  # below 32x32 C1 pads by 1 ('same' for a 3x3 kernel)
    ],
)
def test_kernel_and_pool_size_change_the_maps(side: int, expected: list[int]) -> None:
    model = create_model("lenet5", image_size=side, kernel_size=3, pool_size=3)
    assert _map_sides(model, torch.randn(1, 1, side, side)) == expected
    assert model.classifier.c5.in_features == 16 * expected[-1] ** 2


@pytest.mark.parametrize(
    ("activation", "module"),
    [("tanh", nn.Tanh), ("relu", nn.ReLU), ("leaky_relu", nn.LeakyReLU), ("gelu", nn.GELU)],
)
def test_activation_option(activation: str, module: type[nn.Module]) -> None:
    model = create_model("lenet5", activation=activation, pooling="max")
    assert sum(isinstance(m, module) for m in model.modules()) == 4
    assert any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def _activation_of(model: nn.Module, layer: str) -> type[nn.Module]:
    return type(model.get_submodule(layer))


@pytest.mark.parametrize(
    ("name", "conv", "hidden"),
    [("lenet5", "relu", nn.Sigmoid), ("lenet5_modern", "tanh", nn.ReLU)],
)
def test_conv_activation_changes_c1_and_c3_only(name: str, conv: str, hidden: type) -> None:
    model = create_model(name, image_size=28, conv_activation=conv)
    expected = {"relu": nn.ReLU, "tanh": nn.Tanh}[conv]
    assert _activation_of(model, "features.c1_act") is expected
    assert _activation_of(model, "features.c3_act") is expected
    assert _activation_of(model, "classifier.c5_act") is hidden
    assert _activation_of(model, "classifier.f6_act") is hidden
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_conv_activation_defaults_to_activation() -> None:
    torch.manual_seed(0)
    default = create_model("lenet5", activation="tanh")
    torch.manual_seed(0)
    explicit = create_model("lenet5", activation="tanh", conv_activation="tanh")
    assert [type(m) for m in default.modules()] == [type(m) for m in explicit.modules()]
    for (name, tensor), (_, other) in zip(
        default.state_dict().items(), explicit.state_dict().items(), strict=True
    ):
        assert torch.equal(tensor, other), name


@pytest.mark.parametrize("name", ["lenet5", "lenet5_modern"])
@pytest.mark.parametrize("kernel", [3, 4, 5])
def test_c1_kernel_size_changes_c1_only_and_keeps_28_to_28(name: str, kernel: int) -> None:
    model = create_model(name, image_size=28, c1_kernel_size=kernel)
    c1, c3 = model.features.c1, model.features.c3
    assert c1.weight.shape == (6, 1, kernel, kernel)
    assert c3.weight.shape == (16, 6, 5, 5)
    assert _map_sides(model, torch.randn(2, 1, 28, 28)) == [28, 14, 10, 5]
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    from_shapes = sum(
        math.prod(layer.weight.shape) + (layer.bias.numel() if layer.bias is not None else 0)
        for layer in layers
    )
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    from_shapes += sum(2 * norm.num_features for norm in norms)
    assert sum(p.numel() for p in model.parameters()) == from_shapes
    if name == "lenet5":  # the classic's rows: only C1's 6 x (k*k + 1) changes
        assert from_shapes == 61_706 - 6 * 26 + 6 * (kernel * kernel + 1)


def test_even_c1_kernel_pads_one_more_after_than_before() -> None:
    model = create_model("lenet5", image_size=28, c1_kernel_size=4).eval()
    assert model.features.c1_pad.padding == (1, 2, 1, 2)
    assert model.features.c1.padding == (0, 0)
    image = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        expected = nn.functional.conv2d(
            nn.functional.pad(image, (1, 2, 1, 2)), model.features.c1.weight, model.features.c1.bias
        )
        assert torch.equal(model.features[:2](image), expected)


def test_c1_kernel_at_the_paper_field_is_unpadded() -> None:
    model = create_model("lenet5", image_size=32, c1_kernel_size=3)
    assert _map_sides(model, torch.randn(1, 1, 32, 32)) == [30, 15, 11, 5]


def test_bad_lenet_options_get_one_line() -> None:
    with pytest.raises(
        OptionError, match="no option 'conv_activaton'; did you mean 'conv_activation'"
    ):
        create_model("lenet5", conv_activaton="relu")
    with pytest.raises(InputSizeError, match="c1_kernel_size=29 is larger than the image allows"):
        create_model("lenet5", image_size=28, c1_kernel_size=29)
    with pytest.raises(OptionError, match="unknown activation 'swish'"):
        create_model("lenet5", conv_activation="swish")
    with pytest.raises(OptionError, match="c1_kernel_size=2.5 is not valid"):
        create_model("lenet5", c1_kernel_size=2.5)


def test_combination_without_feature_map_is_an_option_error() -> None:
    with pytest.raises(InputSizeError, match="leaves no feature map at image_size=12"):
        create_model("lenet5", image_size=12, pool_size=3)
    with pytest.raises(OptionError, match="unknown activation"):
        create_model("lenet5", activation="swish")


def test_registry_refuses_inputs_too_small() -> None:
    check_input_size("lenet5", (1, 28, 28))
    with pytest.raises(InputSizeError, match="cannot take 8x8 inputs"):
        check_input_size("lenet5", (1, 8, 8))


@pytest.mark.parametrize("channels", [1, 3])
def test_grayscale_and_rgb_input(channels: int) -> None:
    model = create_model_for_input("lenet5_modern", (channels, 32, 32), num_classes=5).eval()
    assert model.model_options["image_size"] == 32
    with torch.no_grad():
        logits = model(torch.randn(4, channels, 32, 32))
    assert logits.shape == (4, 5)


def test_reset_classifier_and_pre_logits() -> None:
    model = create_model("lenet5").eval()
    images = torch.randn(2, 1, 32, 32)
    model.reset_classifier(7)
    assert model.get_classifier() is model.classifier.output
    with torch.no_grad():
        assert model.forward_head(model.forward_features(images), pre_logits=True).shape == (2, 84)
        assert model(images).shape == (2, 7)


def _read_idx(path: Path) -> torch.Tensor:
    """An IDX file (MNIST's format): big-endian magic and sizes, then uint8 values."""
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return torch.frombuffer(bytearray(data[4 + 4 * dims :]), dtype=torch.uint8).reshape(shape)


def _mnist(root: Path, split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = _read_idx(root / f"{split}-images-idx3-ubyte.gz")[:count, None].float() / 255
    labels = _read_idx(root / f"{split}-labels-idx1-ubyte.gz")[:count].long()
    return (images - MNIST_MEAN[0]) / MNIST_STD[0], labels


@pytest.fixture
def single_thread() -> Iterator[None]:
    """LeNet's steps are too small to gain from intra-op threads, which only contend on 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")
def test_modern_lenet_learns_mnist_in_one_pass_over_6000_images(shared_data: Path) -> None:
    train_images, train_labels = _mnist(shared_data / "mnist", "train", 6_000)
    test_images, test_labels = _mnist(shared_data / "mnist", "t10k", 2_000)
    model = create_model("lenet5_modern")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for start in range(0, len(train_images), 64):
        batch = slice(start, start + 64)
        loss = nn.functional.cross_entropy(model(train_images[batch]), train_labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(test_images).argmax(1) == test_labels).float().mean().item()
    assert accuracy > 0.9  # chance is 0.1; the sigmoid LeNet-5 is still near it at this point
