"""The `width` channel multiplier (ResNet, VGG, AlexNet families) and the ResNets' cheap stem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.errors import OptionError
from cnnlab.models import count_parameters, create_model, create_model_for_input
from cnnlab.models.resnet import BasicBlock, ResNet

WIDE_FAMILIES = ["resnet18", "resnet50", "resnet20", "resnext50_32x4d", "vgg11_bn", "alexnet"]
WIDE_FAMILIES += ["alexnet_original", "zfnet"]


@pytest.mark.parametrize("name", WIDE_FAMILIES)
def test_width_one_is_the_default_network(name: str) -> None:
    assert count_parameters(name, width=1.0) == count_parameters(name)


@pytest.mark.parametrize("name", WIDE_FAMILIES)
def test_parameters_shrink_about_with_the_square_of_width(name: str) -> None:
    full, half, quarter = (count_parameters(name, width=w) for w in (1.0, 0.5, 0.25))
    # every weight matrix shrinks 4x per halving; only the first layer and the classifier's
    # input side shrink 2x, so the ratio lies a little under 4
    assert 3.4 < full / half <= 4.0
    assert 3.0 < half / quarter <= 4.0


def test_resnet_width_scales_every_stage_exactly() -> None:
    with torch.device("meta"):
        direct = ResNet(BasicBlock, (3, 3, 3), widths=(8, 16, 32), small_input=True, shortcut="A")
        model = create_model("resnet20", width=0.5, num_classes=1000)
    assert [s[0].conv1.out_channels for s in model.stages()] == [8, 16, 32]
    assert count_parameters("resnet20", width=0.5, num_classes=1000) == sum(
        p.numel() for p in direct.parameters()
    )


def test_vgg_and_alexnet_width_scale_channels_and_hidden_units() -> None:
    with torch.device("meta"):
        vgg = create_model("vgg11", width=0.25)
        alexnet = create_model("alexnet_original", width=0.5, two_towers=True)
    convs = [m.out_channels for m in vgg.features if isinstance(m, nn.Conv2d)]
    assert convs == [16, 32, 64, 64, 128, 128, 128, 128]
    assert vgg.classifier[0].in_features == 128 * 7 * 7 and vgg.classifier[0].out_features == 1024
    # grouped (two-tower) convolutions keep channel counts divisible by their groups
    assert all(m.out_channels % m.groups == 0 for m in alexnet.features if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(
    ("name", "width"),
    [("resnet18", 0.25), ("vgg11_bn", 0.25), ("alexnet", 0.25)] + [("resnet20", 0.5)],
)
def test_narrow_networks_run_forward_and_backward_at_small_inputs(name: str, width: float) -> None:
    torch.manual_seed(0)
    side = 32 if name == "resnet20" else 64
    model = create_model_for_input(name, (3, side, side), num_classes=5, width=width)
    logits = model(torch.randn(4, 3, side, side))
    assert logits.shape == (4, 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_cheap_stem_halves_the_input_side_once() -> None:
    torch.manual_seed(0)
    sizes: dict[str, list[int]] = {}
    for stem, small_input in (("paper", False), ("cheap", False), ("paper", True)):
        model = create_model(
            "resnet18", num_classes=2, stem=stem, small_input=small_input, width=0.25
        )
        seen: list[int] = []
        handle = model.layer1.register_forward_hook(
            lambda m, i, o, seen=seen: seen.append(o.shape[-1])
        )
        model.eval()(torch.randn(1, 3, 64, 64))
        handle.remove()
        sizes[f"{stem}/{small_input}"] = seen
    assert sizes == {"paper/False": [16], "cheap/False": [32], "paper/True": [64]}


def test_cheap_stem_keeps_the_state_dict_keys_and_is_a_3x3_stride_2() -> None:
    with torch.device("meta"):
        plain = create_model("resnet18").state_dict()
        cheap = create_model("resnet18", stem="cheap")
    assert cheap.state_dict().keys() == plain.keys()
    assert cheap.conv1.kernel_size == (3, 3) and cheap.conv1.stride == (2, 2)
    assert isinstance(cheap.maxpool, nn.Identity)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("resnet18", {"stem": "cheap", "small_input": True}, "conflict"),
        ("resnet18", {"stem": "tiny"}, "stem must be one of paper, cheap"),
        ("resnet18", {"width": 0}, "width is a channel multiplier"),
        ("vgg16", {"width": 0.0}, "width is a channel multiplier"),
        ("vgg16", {"width": -1.0}, "width is a number >= 0"),
        ("alexnet", {"width": 100}, "width is a channel multiplier"),
    ],
)
def test_bad_width_and_stem_options_say_what_is_wrong(
    name: str, options: dict, message: str
) -> None:
    with pytest.raises(OptionError, match=message):
        create_model(name, **options)
