"""`summarize`: published totals of reference networks and hand-computed values on tiny ones."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from cnnlab.errors import InputSizeError, OptionError
from cnnlab.models import count_parameters
from cnnlab.summary import summarize


def tiny_net() -> nn.Sequential:
    """2x10x10 input -> conv 3x3 (4 ch) -> ReLU -> max-pool 2 -> adaptive pool 4 -> linear 5."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(2, 4, kernel_size=3),
            relu=nn.ReLU(inplace=True),
            pool=nn.MaxPool2d(2),
            adapt=nn.AdaptiveAvgPool2d(4),
            flatten=nn.Flatten(),
            fc=nn.Linear(4 * 4 * 4, 5),
        )
    )


class SharedConv(nn.Module):
    """One 1x1 convolution applied twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.conv(x))


class ValueDependent(nn.Module):
    """Reads a tensor value in forward, which meta tensors cannot do."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc(x / (1.0 + x.abs().max().item()))


def test_vgg16_totals() -> None:
    summary = summarize("vgg16", (3, 224, 224))
    assert summary.params == summary.trainable_params == 138_357_544
    assert summary.activations == 15_237_608
    assert round(summary.activation_bytes / 1e6) == 61
    assert round(summary.macs / 1e9, 2) == 15.47
    assert summary.flops == 2 * summary.macs


def test_resnet50_totals() -> None:
    summary = summarize("resnet50", (3, 224, 224))
    assert summary.params == 25_557_032
    assert round(summary.macs / 1e9, 2) == 4.09


def test_tiny_network_rows_match_hand_computation() -> None:
    summary = summarize(tiny_net(), (2, 10, 10))
    conv_side = 10 - 3 + 1  # valid 3x3 convolution
    pool_side = conv_side // 2
    conv_values = 4 * conv_side * conv_side
    pool_values = 4 * pool_side * pool_side
    expected = {
        # name: (output shape, params, MACs, activations)
        "conv": (
            (4, conv_side, conv_side),
            4 * 2 * 3 * 3 + 4,
            conv_values * 2 * 3 * 3,
            conv_values,
        ),
        "relu": ((4, conv_side, conv_side), 0, 0, 0),  # in place: nothing new
        "pool": ((4, pool_side, pool_side), 0, 0, pool_values),
        "adapt": ((4, 4, 4), 0, 0, 0),  # already 4x4: an identity
        "flatten": ((pool_values,), 0, 0, 0),
        "fc": ((5,), pool_values * 5 + 5, pool_values * 5, 5),
    }
    rows = {
        layer.name: (layer.output_shape, layer.params, layer.macs, layer.activations)
        for layer in summary.layers
    }
    assert rows == expected
    assert summary.activations == 2 * 10 * 10 + conv_values + pool_values + 5
    assert summary.macs == conv_values * 2 * 3 * 3 + pool_values * 5
    assert summary.params == sum(row[1] for row in expected.values())


def test_module_called_twice_gives_two_rows_and_counts_its_parameters_once() -> None:
    summary = summarize(SharedConv(), (3, 5, 5))
    assert [layer.name for layer in summary.layers] == ["conv", "conv"]
    assert [layer.params for layer in summary.layers] == [3 * 3 + 3, 0]
    assert [layer.macs for layer in summary.layers] == [3 * 3 * 5 * 5] * 2
    assert summary.activations == 3 * (3 * 5 * 5)
    assert summary.params == 3 * 3 + 3


def test_module_is_left_as_it_was() -> None:
    model = tiny_net().train()
    model.fc.eval()
    weight = model.conv.weight.detach().clone()
    summarize(model, (2, 10, 10))
    assert model.training and not model.fc.training and model.conv.training
    assert model.conv.weight.device.type == "cpu"
    assert torch.equal(model.conv.weight, weight)


def test_value_dependent_forward_falls_back_to_a_real_pass() -> None:
    summary = summarize(ValueDependent(), (1, 2, 3))
    assert [(layer.name, layer.output_shape, layer.macs) for layer in summary.layers] == [
        ("fc", (2,), 6 * 2)
    ]


def test_name_is_built_for_the_input() -> None:
    summary = summarize("resnet18", (1, 64, 64), num_classes=10)
    assert summary.layers[0].params == 64 * 1 * 7 * 7  # conv1 takes one channel
    assert summary.layers[-1].output_shape == (10,)
    assert summary.params == count_parameters("resnet18", in_channels=1, num_classes=10)


def test_image_size_follows_the_input_for_networks_built_for_one_size() -> None:
    summary = summarize("lenet5", (1, 28, 28))
    assert summary.params == count_parameters("lenet5", in_channels=1, image_size=28)


def test_training_memory_grows_with_batch_and_trainable_parameters() -> None:
    one, eight = (summarize(tiny_net(), (2, 10, 10), batch_size=b) for b in (1, 8))
    assert eight.training_memory_bytes() - one.training_memory_bytes() == 7 * one.activation_bytes
    frozen_model = tiny_net().requires_grad_(False)
    frozen = summarize(frozen_model, (2, 10, 10))
    assert frozen.trainable_params == 0
    assert frozen.training_memory_bytes() == frozen.param_bytes + frozen.activation_bytes
    adam, momentum = one.training_memory_bytes(2), one.training_memory_bytes(1)
    assert adam - momentum == one.param_bytes


def test_to_dict_is_json_with_totals_and_layers() -> None:
    data = json.loads(json.dumps(summarize(tiny_net(), (2, 10, 10)).to_dict()))
    assert {"params", "trainable_params", "macs", "flops", "activations", "layers"} <= set(data)
    assert data["layers"][0] == {
        "name": "conv",
        "type": "Conv2d",
        "output_shape": [4, 8, 8],
        "params": 4 * 2 * 3 * 3 + 4,
        "macs": (4 * 8 * 8) * (2 * 3 * 3),
        "activations": 4 * 8 * 8,
    }


@pytest.mark.parametrize(
    ("model", "input_size", "options", "error"),
    [
        ("vgg16", (3, 16, 16), {}, InputSizeError),
        ("vgg16", (3, 224), {}, InputSizeError),
        ("vgg16", (3, 224, 224), {"no_such_option": 1}, OptionError),
        ("vgg16", (3, 224, 224), {"in_channels": 1}, OptionError),
    ],
)
def test_bad_requests_raise_one_line_errors(model, input_size, options, error) -> None:
    with pytest.raises(error) as raised:
        summarize(model, input_size, **options)
    assert "\n" not in str(raised.value)


def test_options_with_a_built_module_are_refused() -> None:
    with pytest.raises(OptionError, match="model name"):
        summarize(tiny_net(), (2, 10, 10), num_classes=3)
