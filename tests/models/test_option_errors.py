"""A bad model option is named as such on every path, never mistaken for a too-small input.

Every option of every registered model gets a value of the wrong kind or range; `create_model`,
`min_input_size`, `check_input_size` and `create_model_for_input` (the input-size search used
to swallow option errors: "accepts no input size up to 512") must all raise an `OptionError`
that names the option or the value. Calling a network on an input it cannot take raises the
registry's one-line `InputSizeError`, not a shape error from deep inside the network.
"""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import InputSizeError, OptionError
from cnnlab.models import (
    check_input_size,
    create_model,
    create_model_for_input,
    list_models,
    min_input_size,
    model_info,
)
from cnnlab.models.layers import ACTIVATIONS

MODELS = [
    name for name in list_models() if model_info(name).builder.__module__.startswith("cnnlab.")
]
# A value each kind of option refuses: by the type of its default.
BAD_VALUES = {bool: "maybe", int: 0, float: -0.5, str: "swishy"}


def _bad_options() -> list[tuple[str, str, object]]:
    cases = []
    for name in MODELS:
        for option, declared in model_info(name).options.items():
            cases.append((name, option, BAD_VALUES[declared.value_type]))
    return cases


def _paths(name: str, options: dict) -> dict:
    shape = model_info(name).input_size
    return {
        "create_model": lambda: create_model(name, **options),
        "min_input_size": lambda: min_input_size(name, **options),
        "check_input_size": lambda: check_input_size(name, shape, **options),
        "create_model_for_input": lambda: create_model_for_input(name, shape, 10, **options),
    }


@pytest.mark.parametrize(("name", "option", "value"), _bad_options())
def test_every_bad_option_value_is_named_on_every_path(name: str, option: str, value) -> None:
    paths = list(_paths(name, {}))
    if option in ("num_classes", "in_channels"):  # create_model_for_input takes them from the data
        paths.remove("create_model_for_input")
    with torch.device("meta"):
        for path in paths:
            with pytest.raises(OptionError) as error:
                _paths(name, {option: value})[path]()
            message = str(error.value)
            assert "\n" not in message, path
            assert option in message or repr(value).strip("'") in message, (path, message)
            assert "input size" not in message, (path, message)


def test_an_unknown_activation_is_named_with_the_valid_ones() -> None:
    for path in _paths("lenet5", {"activation": "swishy"}).values():
        with pytest.raises(OptionError) as error:
            path()
        message = str(error.value)
        assert "activation 'swishy'" in message
        assert all(valid in message for valid in ACTIVATIONS)


def test_lenet_names_its_real_smallest_input_whatever_image_size_says() -> None:
    """12x12 works (C1 pads by 2): 12 -> 6 -> 1 after C3/S4; 8x8 does not."""
    create_model_for_input("lenet5", (1, 12, 12), 10)
    for options in ({}, {"image_size": 8}):
        with pytest.raises(InputSizeError) as error:
            check_input_size("lenet5", (1, 8, 8), **options)
        message = str(error.value)
        assert "smallest it accepts is 12x12" in message and "--image-size 12" in message


def test_the_suggested_image_size_is_the_named_minimum() -> None:
    with pytest.raises(InputSizeError) as error:
        check_input_size("googlenet", (3, 8, 8))
    assert "smallest it accepts is 15x15" in str(error.value)
    assert "--image-size 15" in str(error.value)


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        ("googlenet", (1, 3, 8, 8), "smallest it accepts is 15x15"),
        ("resnet18", (2, 3, 16, 16), None),  # small but fine
        ("lenet5", (1, 1, 8, 8), "smallest it accepts is 12x12"),
    ],
)
def test_calling_a_network_on_an_input_it_cannot_take(name, shape, expected) -> None:
    model = create_model(name, in_channels=shape[1], num_classes=3).eval()
    images = torch.randn(shape)
    if expected is None:
        with torch.no_grad():
            assert model(images).shape == (shape[0], 3)
        return
    with pytest.raises(InputSizeError, match=expected), torch.no_grad():
        model(images)


def test_a_network_built_for_one_size_names_its_image_size() -> None:
    model = create_model_for_input("lenet5", (1, 28, 28), 10).eval()
    with pytest.raises(InputSizeError, match="built for image_size=28 .* image_size=64") as error:
        model(torch.randn(1, 1, 64, 64))
    # The fixes in the command line's words, not the Python function's name.
    assert "`--model-opt image_size=64`" in str(error.value)
    assert "`--image-size 28`" in str(error.value)
    assert "create_model_for_input" not in str(error.value)


def test_errors_that_are_not_about_the_size_pass_through() -> None:
    model = create_model("resnet18", num_classes=3).train()  # batch norm needs 2 images
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model(torch.randn(1, 3, 32, 32))
