"""Inception-v3 against torchvision's reference: weights, outputs, auxiliary head, input sizes."""

from __future__ import annotations

import pytest
import torch
import torchvision
from small_inputs import assert_small_input_takes_28_pixel_images
from torch import nn
from torch.nn import functional as F
from torchvision.models import inception as tv_inception

from cnnlab.errors import InputSizeError, OptionError
from cnnlab.models import check_input_size, count_parameters, create_model, min_input_size
from cnnlab.models.inception import InceptionAux
from cnnlab.models.layers import AuxOutputs


@pytest.fixture(scope="module", params=[True, False], ids=["aux", "no_aux"])
def model_pair(request: pytest.FixtureRequest) -> tuple[nn.Module, nn.Module, bool]:
    """(cnnlab inception_v3, torchvision inception_v3, aux_logits), built from the same seed."""
    torch.manual_seed(0)
    aux = request.param
    reference = torchvision.models.inception_v3(
        weights=None, aux_logits=aux, init_weights=True, transform_input=False
    )
    return create_model("inception_v3", aux_logits=aux), reference, aux


@pytest.fixture(scope="module")
def small_model() -> nn.Module:
    """A 10-class Inception-v3 with its auxiliary head, for behaviour that does not mutate it."""
    torch.manual_seed(0)
    return create_model("inception_v3", num_classes=10)


@pytest.mark.slow
def test_parameter_count_matches_torchvision(model_pair) -> None:
    _, reference, aux = model_pair
    expected = sum(p.numel() for p in reference.parameters())
    assert count_parameters("inception_v3", aux_logits=aux) == expected


@pytest.mark.slow
def test_state_dict_names_and_shapes_match_torchvision(model_pair) -> None:
    model, reference, _ = model_pair
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    theirs = {name: tuple(t.shape) for name, t in reference.state_dict().items()}
    assert ours == theirs


@pytest.mark.slow
def test_torchvision_weights_load_and_give_the_same_outputs(model_pair) -> None:
    model, reference, _ = model_pair
    model.load_state_dict(reference.state_dict(), strict=True)
    torch.manual_seed(1)
    x = torch.randn(1, 3, 80, 80)
    with torch.no_grad():
        ours, theirs = model.eval()(x), reference.eval()(x)
    assert isinstance(ours, torch.Tensor) and ours.shape == (1, 1000)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * theirs.abs().max().item())


def test_aux_head_matches_torchvision_on_the_papers_17x17_grid() -> None:
    torch.manual_seed(0)
    reference = tv_inception.InceptionAux(768, num_classes=10)
    head = InceptionAux(768, num_classes=10)
    head.load_state_dict(reference.state_dict(), strict=True)
    maps = torch.randn(2, 768, 17, 17)
    torch.testing.assert_close(head.train()(maps), reference.train()(maps))


def test_train_mode_returns_one_aux_logits_and_eval_mode_plain_logits(small_model) -> None:
    x = torch.randn(2, 3, 75, 75)  # the smallest input: a 3x3 grid under the auxiliary head
    out = small_model.train()(x)
    assert isinstance(out, AuxOutputs)
    assert out.logits.shape == (2, 10)
    assert [tuple(a.shape) for a in out.aux_logits] == [(2, 10)]
    assert torch.isfinite(out.aux_logits[0]).all()
    with torch.no_grad():
        plain = small_model.eval()(x)
    assert isinstance(plain, torch.Tensor) and plain.shape == (2, 10)


def test_features_and_head_compose_to_the_forward(small_model) -> None:
    x = torch.randn(1, 3, 75, 75)
    small_model.eval()
    with torch.no_grad():
        features = small_model.forward_features(x)
        assert features.shape == (1, 2048, 1, 1)
        assert small_model.forward_head(features, pre_logits=True).shape == (1, 2048)
        torch.testing.assert_close(small_model.forward_head(features), small_model(x))


def test_aux_logits_false_removes_the_head() -> None:
    torch.manual_seed(0)
    model = create_model("inception_v3", num_classes=5, aux_logits=False)
    assert model.AuxLogits is None and model.aux_heads() == []
    assert not any(name.startswith("AuxLogits") for name in model.state_dict())
    out = model.train()(torch.randn(2, 3, 75, 75))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)


def test_aux_loss_weight_is_torchvisions_recipe() -> None:
    with torch.device("meta"):
        assert create_model("inception_v3").aux_loss_weight == 0.4


def test_grayscale_input_with_in_channels_1() -> None:
    torch.manual_seed(0)
    model = create_model("inception_v3", num_classes=10, in_channels=1, aux_logits=False).eval()
    assert model.Conv2d_1a_3x3.conv.weight.shape == (32, 1, 3, 3)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 75, 75)).shape == (1, 10)


def test_reset_classifier_resizes_main_and_aux_heads() -> None:
    torch.manual_seed(0)
    model = create_model("inception_v3")
    model.reset_classifier(3)
    assert model.get_classifier() is model.fc and model.fc.out_features == 3
    out = model.train()(torch.randn(2, 3, 75, 75))
    assert [tuple(t.shape) for t in (out.logits, *out.aux_logits)] == [(2, 3), (2, 3)]


def test_initialization_follows_the_reference_model(small_model) -> None:
    expected_std = {
        small_model.Mixed_7c.branch3x3dbl_1.conv.weight: 0.1,
        small_model.fc.weight: 0.1,
        small_model.AuxLogits.conv1.conv.weight: 0.01,
        small_model.AuxLogits.fc.weight: 0.001,
    }
    for weight, std in expected_std.items():
        assert weight.std().item() == pytest.approx(std, rel=0.05)
    batch_norms = [m for m in small_model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all((bn.weight == 1).all() and (bn.bias == 0).all() for bn in batch_norms)


def test_smallest_input_is_torchvisions_and_smaller_inputs_raise() -> None:
    smallest = torchvision.models.Inception_V3_Weights.IMAGENET1K_V1.meta["min_size"][0]
    assert min_input_size("inception_v3") == smallest
    with torch.device("meta"):
        model = create_model("inception_v3").eval()
        assert model(torch.empty(1, 3, smallest, smallest)).shape == (1, 1000)
        with pytest.raises(InputSizeError, match=f"smallest it accepts is {smallest}x{smallest}"):
            model(torch.empty(1, 3, smallest - 1, smallest - 1))  # the registry's one line
    with pytest.raises(InputSizeError, match=f"smallest it accepts is {smallest}x{smallest}"):
        check_input_size("inception_v3", (3, 64, 64))


@pytest.mark.parametrize("options", [{"num_classes": 0}, {"in_channels": -1}, {"dropout": 1.5}])
def test_bad_options_raise(options: dict[str, object]) -> None:
    with torch.device("meta"), pytest.raises(OptionError):
        create_model("inception_v3", **options)


# small_input: the paper's network for low-resolution input (Section 9).


@pytest.fixture(scope="module", params=[(1, 28), (3, 32)], ids=["1x28x28", "3x32x32"])
def low_resolution(request: pytest.FixtureRequest) -> tuple[nn.Module, tuple[int, int, int]]:
    """(a 10-class small_input Inception-v3 with its auxiliary head, its input shape)."""
    channels, side = request.param
    torch.manual_seed(0)
    model = create_model("inception_v3", num_classes=10, in_channels=channels, small_input=True)
    return model, (channels, side, side)


def test_small_input_is_the_papers_low_resolution_stem() -> None:
    with torch.device("meta"):
        model = create_model("inception_v3", small_input=True)
    assert model.Conv2d_1a_3x3.conv.stride == (1, 1)
    assert isinstance(model.maxpool1, nn.Identity)
    assert isinstance(model.maxpool2, nn.MaxPool2d)


def test_small_input_keeps_the_17x17_and_8x8_grids_at_79x79() -> None:
    """The paper's point: a 79x79 input reaches the grids a 299x299 one does by default."""
    sides: list[int] = []
    with torch.device("meta"):
        model = create_model("inception_v3", small_input=True).eval()
        for block in (model.Mixed_6e, model.Mixed_7c):
            block.register_forward_hook(lambda _module, _inputs, out: sides.append(out.shape[-1]))
        model(torch.empty(1, 3, 79, 79))
    assert sides == [17, 8]


def test_small_input_keeps_the_parameters_and_state_dict_keys() -> None:
    """Only a stride and a pool change: torchvision's weights load into either network."""
    with torch.device("meta"):
        default = create_model("inception_v3").state_dict()
        small = create_model("inception_v3", small_input=True).state_dict()
    assert {k: v.shape for k, v in small.items()} == {k: v.shape for k, v in default.items()}
    assert count_parameters("inception_v3", small_input=True) == count_parameters("inception_v3")


def test_small_input_accepts_28x28() -> None:
    assert_small_input_takes_28_pixel_images("inception_v3")


def test_small_input_trains_with_aux_logits(low_resolution) -> None:
    model, shape = low_resolution
    model.train()
    model.zero_grad(set_to_none=True)
    # Batch 4: at 28x28 the last maps are 1x1, and batch norm over two values gives +-1.
    targets = torch.tensor([1, 7, 3, 0])
    out = model(torch.randn(4, *shape))
    assert isinstance(out, AuxOutputs)
    assert [tuple(t.shape) for t in (out.logits, *out.aux_logits)] == [(4, 10), (4, 10)]
    loss = F.cross_entropy(out.logits, targets)
    loss = loss + model.aux_loss_weight * F.cross_entropy(out.aux_logits[0], targets)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_small_input_eval_mode_returns_logits_and_backpropagates(low_resolution) -> None:
    model, shape = low_resolution
    model.eval()
    model.zero_grad(set_to_none=True)
    x = torch.randn(2, *shape, requires_grad=True)
    logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 10)
    logits.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert model.Conv2d_1a_3x3.conv.weight.grad is not None
    assert model.AuxLogits.fc.weight.grad is None  # the paper discards the head at inference


def test_small_input_pre_logits_and_reset_classifier() -> None:
    torch.manual_seed(0)
    model = create_model("inception_v3", num_classes=10, small_input=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 2048, 2, 2)
        assert model.forward_head(features, pre_logits=True).shape == (2, 2048)
    model.reset_classifier(3)
    assert model.get_classifier() is model.fc and model.fc.out_features == 3
    out = model.train()(x)
    assert [tuple(t.shape) for t in (out.logits, *out.aux_logits)] == [(2, 3), (2, 3)]
