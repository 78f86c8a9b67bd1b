"""GoogLeNet against torchvision's reference and the paper: weights, outputs, auxiliary heads."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnlab.errors import InputSizeError, OptionError
from cnnlab.models import check_input_size, count_parameters, create_model, min_input_size
from cnnlab.models.layers import AuxOutputs

# Table 1 of the paper: (#5x5 reduce, #5x5) of inception 3a, 3b, 4a-4e, 5a, 5b.
PAPER_5X5_CHANNELS = [
    (16, 32), (32, 96), (16, 48), (24, 64), (24, 64), (32, 64), (32, 128), (32, 128), (48, 128)
]  # fmt: skip


def torchvision_googlenet(aux_logits: bool, **options: float) -> nn.Module:
    return torchvision.models.googlenet(
        weights=None, aux_logits=aux_logits, init_weights=True, transform_input=False, **options
    )


@pytest.fixture(scope="module", params=[True, False], ids=["aux", "no_aux"])
def model_pair(request: pytest.FixtureRequest) -> tuple[nn.Module, nn.Module, bool]:
    """(cnnlab googlenet, torchvision googlenet, aux_logits), built from the same seed."""
    torch.manual_seed(0)
    aux = request.param
    return create_model("googlenet", aux_logits=aux), torchvision_googlenet(aux), aux


@pytest.fixture(scope="module")
def small_model() -> nn.Module:
    """A 7-class GoogLeNet with its auxiliary heads, for behaviour that does not mutate it."""
    torch.manual_seed(0)
    return create_model("googlenet", num_classes=7)


def test_parameter_count_matches_torchvision(model_pair) -> None:
    _, reference, aux = model_pair
    expected = sum(p.numel() for p in reference.parameters())
    assert count_parameters("googlenet", aux_logits=aux) == expected
    if not aux:
        assert expected == 6_624_904


def test_state_dict_names_and_shapes_match_torchvision(model_pair) -> None:
    model, reference, _ = model_pair
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    theirs = {name: tuple(t.shape) for name, t in reference.state_dict().items()}
    assert ours == theirs


def test_torchvision_weights_load_and_give_the_same_outputs(model_pair) -> None:
    model, reference, _ = model_pair
    model.load_state_dict(reference.state_dict(), strict=True)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model.eval()(x), reference.eval()(x)
    assert isinstance(ours, torch.Tensor) and ours.shape == (2, 1000)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * theirs.abs().max().item())


@pytest.mark.slow
def test_training_outputs_match_torchvision_including_aux_heads() -> None:
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=10, dropout=0.0, aux_dropout=0.0)
    reference = torchvision_googlenet(True, num_classes=10, dropout=0.0, dropout_aux=0.0)
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    ours, theirs = model.train()(x), reference.train()(x)
    assert isinstance(ours, AuxOutputs)
    torch.testing.assert_close(ours.logits, theirs.logits)
    torch.testing.assert_close(ours.aux_logits, (theirs.aux_logits1, theirs.aux_logits2))


def test_train_mode_returns_two_aux_logits_and_eval_mode_plain_logits(small_model) -> None:
    x = torch.randn(2, 3, 32, 32)
    out = small_model.train()(x)
    assert isinstance(out, AuxOutputs)
    assert out.logits.shape == (2, 7)
    assert [tuple(a.shape) for a in out.aux_logits] == [(2, 7), (2, 7)]
    with torch.no_grad():
        plain = small_model.eval()(x)
    assert isinstance(plain, torch.Tensor) and not isinstance(plain, tuple)
    assert plain.shape == (2, 7) and torch.isfinite(plain).all()


def test_aux_logits_false_removes_the_heads() -> None:
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=5, aux_logits=False)
    assert model.aux_heads() == []
    assert not any(name.startswith("aux") for name in model.state_dict())
    out = model.train()(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)


def test_aux_loss_weight_is_the_papers_discount() -> None:
    with torch.device("meta"):
        assert create_model("googlenet").aux_loss_weight == 0.3


def test_features_and_head_compose_to_the_forward(small_model) -> None:
    model = small_model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 1024, 2, 2)
        assert model.forward_head(features, pre_logits=True).shape == (2, 1024)
        torch.testing.assert_close(model.forward_head(features), model(x))


def test_forward_features_skips_the_aux_heads_in_training(small_model) -> None:
    model = small_model.train()
    calls = []
    hooks = [
        head.register_forward_hook(lambda module, inputs, output: calls.append(module))
        for head in model.aux_heads()
    ]
    x = torch.randn(2, 3, 32, 32)
    assert isinstance(model.forward_features(x), torch.Tensor) and calls == []
    model(x)
    for hook in hooks:
        hook.remove()
    assert calls == [model.aux1, model.aux2]


def test_grayscale_input_with_in_channels_1() -> None:
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=10, in_channels=1).eval()
    assert model.conv1.conv.weight.shape == (64, 1, 7, 7)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_reset_classifier_resizes_main_and_aux_heads() -> None:
    torch.manual_seed(0)
    model = create_model("googlenet")
    model.reset_classifier(3)
    assert model.get_classifier() is model.fc and model.fc.out_features == 3
    out = model.train()(torch.randn(2, 3, 32, 32))
    assert [tuple(t.shape) for t in (out.logits, *out.aux_logits)] == [(2, 3)] * 3


def test_initialization_follows_torchvision(small_model) -> None:
    for weight in (
        small_model.inception5b.branch1.conv.weight,
        small_model.aux1.fc1.weight,
        small_model.fc.weight,
    ):
        assert weight.std().item() == pytest.approx(0.01, rel=0.05)
        assert weight.mean().abs().item() < 1e-3
    batch_norms = [m for m in small_model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all((bn.weight == 1).all() and (bn.bias == 0).all() for bn in batch_norms)
    assert all(bn.eps == 1e-3 for bn in batch_norms)


def test_paper_5x5_restores_the_5x5_branch() -> None:
    with torch.device("meta"):
        model = create_model("googlenet", paper_5x5=True)
    inceptions = [m for name, m in model.named_children() if name.startswith("inception")]
    assert [m.branch3[1].conv.kernel_size for m in inceptions] == [(5, 5)] * 9
    extra = sum(reduce * out * (25 - 9) for reduce, out in PAPER_5X5_CHANNELS)
    assert count_parameters("googlenet", paper_5x5=True) == count_parameters("googlenet") + extra
    torch.manual_seed(0)
    small = create_model("googlenet", paper_5x5=True, aux_logits=False).eval()
    with torch.no_grad():
        assert small(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_smallest_input_is_torchvisions_and_smaller_inputs_raise() -> None:
    smallest = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.meta["min_size"][0]
    assert min_input_size("googlenet") == smallest
    with torch.device("meta"):
        model = create_model("googlenet").eval()
        assert model(torch.empty(1, 3, smallest, smallest)).shape == (1, 1000)
        with pytest.raises(InputSizeError, match=f"smallest it accepts is {smallest}x{smallest}"):
            model(torch.empty(1, 3, smallest - 1, smallest - 1))  # the registry's one line
    with pytest.raises(InputSizeError, match=f"smallest it accepts is {smallest}x{smallest}"):
        check_input_size("googlenet", (3, 8, 8))


@pytest.mark.parametrize(
    "options",
    [
        {"num_classes": 0},
        {"in_channels": 0},
        {"dropout": 1.0},
        {"aux_dropout": -0.1},
        {"aux_logits": False, "aux_dropout": 0.5},
    ],
)
def test_bad_or_conflicting_options_raise(options: dict[str, object]) -> None:
    with torch.device("meta"), pytest.raises(OptionError):
        create_model("googlenet", **options)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["28px_grey", "32px"])
def test_small_input_trains_and_evaluates_on_small_images(shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=42, in_channels=shape[0], small_input=True)
    x = torch.randn(2, *shape)
    out = model.train()(x)
    assert isinstance(out, AuxOutputs)
    assert [tuple(t.shape) for t in (out.logits, *out.aux_logits)] == [(2, 42)] * 3
    (out.logits.sum() + sum(a.sum() for a in out.aux_logits)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        plain = model.eval()(x)
    assert isinstance(plain, torch.Tensor) and plain.shape == (2, 42)
    assert torch.isfinite(plain).all()


def test_small_input_grids_at_32px() -> None:
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=10, small_input=True).eval()
    grids = {}
    hooks = [
        getattr(model, name).register_forward_hook(
            lambda module, inputs, output, name=name: grids.update({name: output.shape[-2:]})
        )
        for name in ("inception3a", "inception4a", "inception5a")
    ]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert grids == {"inception3a": (16, 16), "inception4a": (8, 8), "inception5a": (4, 4)}


def test_small_input_keeps_the_state_dict_and_takes_28px() -> None:
    with torch.device("meta"):
        default, small = create_model("googlenet"), create_model("googlenet", small_input=True)
    shapes = [{k: tuple(t.shape) for k, t in m.state_dict().items()} for m in (default, small)]
    assert shapes[0] == shapes[1]
    assert isinstance(small.maxpool1, nn.Identity) and small.conv1.conv.stride == (1, 1)
    assert min_input_size("googlenet", small_input=True) <= 28


def test_small_input_head_api() -> None:
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=10, small_input=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 1024, 4, 4)
        assert model.forward_head(features, pre_logits=True).shape == (2, 1024)
    model.reset_classifier(3)
    out = model.train()(x)
    assert [tuple(t.shape) for t in (out.logits, *out.aux_logits)] == [(2, 3)] * 3
