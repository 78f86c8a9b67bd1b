"""ResNet and ResNeXt: parity with torchvision, the paper's architecture rules, the options."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from cnnlab.errors import OptionError
from cnnlab.models import count_parameters, create_model, list_models, model_info
from cnnlab.models.resnet import BasicBlock, Bottleneck, ResNet, ZeroPadShortcut

TORCHVISION_VARIANTS = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
]
LARGE_VARIANTS = {"resnet152", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2"}
CIFAR_VARIANTS = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]


def _blocks(model: nn.Module) -> dict[str, nn.Module]:
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, BasicBlock | Bottleneck)
    }


def _randomize_batchnorm(model: nn.Module, seed: int) -> None:
    """Give every BN distinct statistics and affine terms, so swapped BNs change the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
                module.running_mean.normal_(0.0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)


@pytest.mark.parametrize("name", TORCHVISION_VARIANTS)
def test_state_dict_layout_and_count_match_torchvision(name: str) -> None:
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)(weights=None)
        model = create_model(name)
    expected = {key: value.shape for key, value in reference.state_dict().items()}
    assert {key: value.shape for key, value in model.state_dict().items()} == expected
    assert count_parameters(name) == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in LARGE_VARIANTS else name
        for name in TORCHVISION_VARIANTS
    ],
)
def test_torchvision_weights_load_and_give_the_same_outputs(name: str) -> None:
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    _randomize_batchnorm(reference, seed=1)
    model = create_model(name).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected, actual = reference(images), model(images)
    relative_error = torch.linalg.vector_norm(actual - expected) / torch.linalg.vector_norm(
        expected
    )
    assert relative_error < 1e-5


@pytest.mark.parametrize(
    ("name", "parameters"),
    [("resnet18", 11_689_512), ("resnet50", 25_557_032), ("resnext50_32x4d", 25_028_904)],
)
def test_parameter_counts_match_torchvision_published(name: str, parameters: int) -> None:
    assert count_parameters(name) == parameters


@pytest.mark.parametrize(
    ("name", "block", "layers"),
    [
        ("resnet18", BasicBlock, (2, 2, 2, 2)),
        ("resnet34", BasicBlock, (3, 4, 6, 3)),
        ("resnet50", Bottleneck, (3, 4, 6, 3)),
        ("resnet101", Bottleneck, (3, 4, 23, 3)),
        ("resnet152", Bottleneck, (3, 8, 36, 3)),
        ("resnet56", BasicBlock, (9, 9, 9)),
    ],
)
def test_block_type_and_stage_depths_follow_the_paper(
    name: str, block: type[nn.Module], layers: tuple[int, ...]
) -> None:
    with torch.device("meta"):
        model = create_model(name)
    stages = list(model.stages())
    assert tuple(len(stage) for stage in stages) == layers
    assert all(type(b) is block for stage in stages for b in stage)


@pytest.mark.parametrize(
    ("name", "resized_blocks"),
    [
        ("resnet18", {"layer2.0", "layer3.0", "layer4.0"}),
        ("resnet34", {"layer2.0", "layer3.0", "layer4.0"}),
        # the first bottleneck widens 64 -> 256 channels, so it projects as well
        ("resnet50", {"layer1.0", "layer2.0", "layer3.0", "layer4.0"}),
        ("resnext50_32x4d", {"layer1.0", "layer2.0", "layer3.0", "layer4.0"}),
    ],
)
def test_projection_shortcuts_only_where_shapes_change(name: str, resized_blocks: set) -> None:
    with torch.device("meta"):
        model = create_model(name)
    projecting = {n for n, block in _blocks(model).items() if block.downsample is not None}
    assert projecting == resized_blocks
    for block_name in projecting:
        conv, norm = model.get_submodule(f"{block_name}.downsample")
        assert conv.kernel_size == (1, 1) and isinstance(norm, nn.BatchNorm2d)


@pytest.mark.parametrize(
    ("name", "groups", "first_width"),
    [("resnet50", 1, 64), ("resnext50_32x4d", 32, 128), ("resnext101_32x8d", 32, 256)]
    + [("resnext101_64x4d", 64, 256), ("wide_resnet50_2", 1, 128)],
)
def test_bottleneck_3x3_has_the_cardinality_and_width(
    name: str, groups: int, first_width: int
) -> None:
    with torch.device("meta"):
        model = create_model(name)
    assert {block.conv2.groups for block in _blocks(model).values()} == {groups}
    # the bottleneck width doubles with each stage, as the channel count does
    widths = [stage[0].conv2.out_channels for stage in model.stages()]
    assert widths == [first_width * 2**stage for stage in range(4)]


def test_small_input_keeps_a_32_32_16_8_4_progression() -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10, small_input=True)
    sizes: list[int] = []
    watched = [model.maxpool, *model.stages()]
    handles = [m.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for m in watched]
    logits = model(torch.randn(2, 3, 32, 32))
    for handle in handles:
        handle.remove()
    assert sizes == [32, 32, 16, 8, 4]
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_small_input_changes_only_the_stem_convolution() -> None:
    with torch.device("meta"):
        plain = create_model("resnet50").state_dict()
        small = create_model("resnet50", small_input=True).state_dict()
    assert plain.keys() == small.keys()
    changed = {key for key in plain if plain[key].shape != small[key].shape}
    assert changed == {"conv1.weight"}
    assert small["conv1.weight"].shape == (64, 3, 3, 3)


@pytest.mark.parametrize(
    ("name", "millions"),
    [("resnet20", 0.27), ("resnet32", 0.46), ("resnet44", 0.66), ("resnet56", 0.85)]
    + [("resnet110", 1.7)],
)
def test_cifar_parameter_counts_match_the_papers_table(name: str, millions: float) -> None:
    digits = len(str(millions).partition(".")[2])
    assert round(count_parameters(name) / 1e6, digits) == millions


def test_option_a_shortcuts_are_parameter_free() -> None:
    with torch.device("meta"):
        model_a = create_model("resnet20", shortcut="A")
        model_b = create_model("resnet20", shortcut="B")
    shortcuts_a = [b.downsample for b in _blocks(model_a).values() if b.downsample is not None]
    assert len(shortcuts_a) == 2 and all(isinstance(s, ZeroPadShortcut) for s in shortcuts_a)
    assert sum(p.numel() for s in shortcuts_a for p in s.parameters()) == 0
    # option B: a 1x1 convolution and BN (scale, shift) for 16 -> 32 and 32 -> 64 channels
    projections = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert count_parameters("resnet20", shortcut="B") == count_parameters("resnet20") + projections
    assert sum(isinstance(b.downsample, nn.Sequential) for b in _blocks(model_b).values()) == 2


def test_zero_pad_shortcut_subsamples_and_appends_zero_channels() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 16, 7, 7)
    out = ZeroPadShortcut(out_channels=32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert not out[:, 16:].any()


@pytest.mark.parametrize("shortcut", ["A", "B"])
@pytest.mark.parametrize(
    ("channels", "side", "final_side"), [(3, 32, 8), (1, 28, 7)], ids=["cifar", "mnist"]
)
def test_cifar_resnet_runs_on_small_images(
    shortcut: str, channels: int, side: int, final_side: int
) -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", shortcut=shortcut, in_channels=channels)
    images = torch.randn(2, channels, side, side)
    assert model.forward_features(images).shape == (2, 64, final_side, final_side)
    logits = model(images)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_cifar_metadata() -> None:
    info = model_info("resnet110")
    assert info.input_size == (3, 32, 32)
    assert info.defaults["shortcut"] == "A" and info.defaults["num_classes"] == 10
    assert set(CIFAR_VARIANTS) <= set(list_models("resnet*"))


@pytest.mark.parametrize(("name", "last_bn"), [("resnet18", "bn2"), ("resnet50", "bn3")])
def test_zero_init_residual_makes_every_block_start_as_identity(name: str, last_bn: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, zero_init_residual=True).eval()
    for block in _blocks(model).values():
        assert not getattr(block, last_bn).weight.any()
        assert torch.equal(block.bn1.weight, torch.ones_like(block.bn1.weight))
    plain_block = model.layer2[1]  # no projection: its output is relu(input)
    x = torch.randn(2, plain_block.conv1.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(plain_block(x.clone()), x.relu())
    default = create_model(name)
    assert all(getattr(b, last_bn).weight.all() for b in _blocks(default).values())


def test_convolutions_use_he_init_with_fan_out() -> None:
    torch.manual_seed(0)
    model = create_model("resnet18")
    weight = model.layer4[1].conv2.weight  # 512 x 512 x 3 x 3
    expected_std = math.sqrt(2.0 / (512 * 3 * 3))
    assert weight.std().item() == pytest.approx(expected_std, rel=0.02)
    assert abs(weight.mean().item()) < 5 * expected_std / math.sqrt(weight.numel())


def test_features_head_and_pre_logits() -> None:
    torch.manual_seed(0)
    model = create_model("resnet50", num_classes=7).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(images)
        pooled = model.forward_head(features, pre_logits=True)
        logits = model(images)
    assert features.shape == (1, 2048, 2, 2)
    assert torch.allclose(pooled, features.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(logits, model.fc(pooled), atol=1e-6)


def test_reset_classifier_replaces_the_fc() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20")
    model.reset_classifier(5)
    assert model.get_classifier() is model.fc
    assert (model.fc.in_features, model.fc.out_features, model.num_classes) == (64, 5, 5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("name", [n for n in list_models() if model_info(n).family == "resnet"])
def test_builds_and_runs_on_the_meta_device(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name).eval()
        logits = model(torch.empty(1, *model_info(name).input_size))
    assert logits.shape == (1, model.num_classes) and logits.is_meta


@pytest.mark.parametrize(
    "build",
    [
        lambda: create_model("resnet20", shortcut="C"),
        lambda: create_model("resnet18", num_classes=0),
        lambda: create_model("resnet18", in_channels=0),
        lambda: ResNet(BasicBlock, (2, 2), widths=(64, 128, 256)),
        lambda: BasicBlock(64, 64, groups=32),
    ],
    ids=["unknown-shortcut", "no-classes", "no-channels", "widths-mismatch", "grouped-basic"],
)
def test_invalid_options_raise_option_error(build) -> None:
    with torch.device("meta"), pytest.raises(OptionError):
        build()
