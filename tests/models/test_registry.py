"""Every registered model, as timm tests its zoo: forward, backward, counts, meta device, errors.

Each model is built once (module-scoped fixture, at its smallest accepted input and with 42
classes) and shared by the tests that need real weights; the rest run on the meta device.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import InputSizeError, OptionError, UnknownNameError
from cnnlab.models import (
    check_input_size,
    count_parameters,
    create_model,
    create_model_for_input,
    list_models,
    min_input_size,
    model_info,
)
from cnnlab.models.layers import AuxOutputs
from cnnlab.models.registry import num_classes_option

# cnnlab's own zoo; other test modules register throwaway networks in the same process.
MODELS = [
    name for name in list_models() if model_info(name).builder.__module__.startswith("cnnlab.")
]
NUM_CLASSES = 42
# Backward passes through the 100M-parameter classifiers of VGG and AlexNet cost seconds each:
# these networks get theirs at batch 2 in a test of their own, marked slow.
BIG_MODELS = [name for name in MODELS if count_parameters(name) > 50_000_000]


@pytest.fixture(scope="module", params=MODELS)
def model_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def smallest_input(model_name: str) -> tuple[int, int, int]:
    side = min_input_size(model_name)
    return model_info(model_name).input_size[0], side, side


@pytest.fixture(scope="module")
def model(model_name: str, smallest_input: tuple[int, int, int]) -> nn.Module:
    torch.manual_seed(0)
    return create_model_for_input(model_name, smallest_input, num_classes=NUM_CLASSES)


def test_registry_is_populated() -> None:
    families = {model_info(name).family for name in MODELS}
    assert {"lenet", "alexnet", "vgg", "nin", "googlenet", "inception", "resnet"} <= families


def test_forward_at_smallest_input(model: nn.Module, smallest_input: tuple) -> None:
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(2, *smallest_input))
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()


def test_backward_reaches_every_parameter(model: nn.Module, smallest_input: tuple) -> None:
    if model.model_name in BIG_MODELS:
        pytest.skip("over 50M parameters: test_backward_of_the_biggest_networks (slow)")
    # Batch 4, not 2: batch norm over two values at 1x1 maps (a ResNet's smallest input)
    # normalizes both to +-1, and its gradient blows up through a hundred layers.
    _check_backward(model, smallest_input, batch=4)


@pytest.mark.slow
@pytest.mark.parametrize("name", BIG_MODELS)
def test_backward_of_the_biggest_networks(name: str) -> None:
    """The networks over 50M parameters (VGG, AlexNet, big ResNets) at their smallest input."""
    side = min_input_size(name)
    shape = (model_info(name).input_size[0], side, side)
    torch.manual_seed(0)
    model = create_model_for_input(name, shape, num_classes=NUM_CLASSES)
    # Batch 2, or 4 with batch norm (two values at 1x1 maps normalize to +-1, see above).
    batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    _check_backward(model, shape, batch=4 if batch_norm else 2)


def _check_backward(model: nn.Module, shape: tuple, batch: int) -> None:
    """One training step's backward pass: every parameter gets a finite gradient."""
    model.train()
    model.zero_grad(set_to_none=True)
    targets = torch.randint(NUM_CLASSES, (batch,))
    output = model(torch.randn(batch, *shape))
    if isinstance(output, AuxOutputs):
        loss = F.cross_entropy(output.logits, targets)
        for aux_logits in output.aux_logits:
            assert aux_logits.shape == (batch, NUM_CLASSES)
            loss = loss + model.aux_loss_weight * F.cross_entropy(aux_logits, targets)
    else:
        loss = F.cross_entropy(output, targets)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reaches {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_count_parameters_matches_the_module(model_name: str, model: nn.Module) -> None:
    real_count = sum(p.numel() for p in model.parameters())
    assert count_parameters(model_name, **model.model_options) == real_count


@pytest.mark.parametrize("name", MODELS)
def test_builds_and_runs_on_meta_device(name: str) -> None:
    info = model_info(name)
    with torch.device("meta"):
        model = create_model(name).eval()
        logits = model(torch.empty(1, *info.input_size))
    assert all(p.is_meta for p in model.parameters())
    assert logits.shape == (1, info.defaults["num_classes"])


@pytest.mark.parametrize("name", MODELS)
def test_reset_classifier_changes_output_width(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name).eval()
        model.reset_classifier(7)
        logits = model(torch.empty(1, *model_info(name).input_size))
    assert logits.shape == (1, 7)


def test_unknown_model_name_lists_the_choices() -> None:
    with pytest.raises(UnknownNameError) as error:
        create_model("no_such_net")
    message = str(error.value)
    assert "\n" not in message and "no_such_net" in message
    assert all(name in message for name in MODELS[:40])


@pytest.mark.parametrize("name", MODELS)
def test_unknown_option_lists_the_valid_ones(name: str) -> None:
    with pytest.raises(OptionError) as error:
        create_model(name, no_such_option=1)
    message = str(error.value)
    assert "\n" not in message and "no_such_option" in message
    assert all(option in message for option in model_info(name).defaults)


def test_too_small_input_names_the_minimum(model_name: str, smallest_input: tuple) -> None:
    channels, side, _ = smallest_input
    if side == 1:
        pytest.skip("accepts inputs of any size")
    with pytest.raises(InputSizeError) as error:
        check_input_size(model_name, (channels, side - 1, side - 1))
    message = str(error.value)
    assert "\n" not in message and f"{side}x{side}" in message
    assert f"--image-size {side}`" in message  # the suggestion is the named minimum


@pytest.mark.parametrize("name", ["vgg11", "alexnet", "zfnet"])
def test_too_small_input_suggests_the_small_input_form_when_it_fits(name: str) -> None:
    with pytest.raises(InputSizeError) as error:
        check_input_size(name, (1, 28, 28), in_channels=1)
    assert "build its small-input form (`--model-opt small_input=true`) or resize" in str(
        error.value
    )
    check_input_size(name, (1, 28, 28), in_channels=1, small_input=True)  # and it does fit
    with pytest.raises(InputSizeError) as error:
        check_input_size("alexnet", (3, 8, 8))
    assert "small-input form" not in str(error.value)  # too small for either form


def test_wrong_channel_count_names_the_fix() -> None:
    name = MODELS[0]
    channels = model_info(name).input_size[0]
    with pytest.raises(InputSizeError, match=f"in_channels={channels + 1}"):
        check_input_size(name, (channels + 1, 224, 224))


def test_entrypoints_take_options_only_through_the_declared_option_set() -> None:
    from cnnlab.models import register_model

    def explicit(*, num_classes: int = 10) -> nn.Module:
        return nn.Linear(1, num_classes)

    with pytest.raises(TypeError, match=r"\*\*options only"):
        register_model(
            input_size=(1, 1, 1), paper="-", options={"num_classes": num_classes_option(10)}
        )(explicit)


@pytest.mark.parametrize("name", MODELS)
def test_every_option_is_documented_in_the_signature_and_docstring(name: str) -> None:
    info = model_info(name)
    signature = inspect.signature(info.builder)
    assert {k: p.default for k, p in signature.parameters.items()} == info.defaults
    for option_name, option in info.options.items():
        assert (
            option.help and f"{option_name} (default {option.default!r}): " in info.builder.__doc__
        )


def test_shared_option_sets_refuse_unknown_options() -> None:
    with pytest.raises(OptionError, match="valid options: num_classes, in_channels"):
        create_model("resnet18", dropout=0.5)
