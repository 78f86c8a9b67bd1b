"""Residual networks: ResNet (He et al. 2015) and ResNeXt (Xie et al. 2016).

- He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", arXiv:1512.03385:
  the basic block (two 3x3 convolutions) and the bottleneck block (1x1 reduce, 3x3, 1x1
  expand), identity shortcuts, and the two kinds of shortcut where shapes change (§3.3):
  option A pads the extra channels with zeros (parameter-free), option B projects with a
  1x1 convolution. §4.1 gives the ImageNet networks (18 to 152 layers), §4.2 the CIFAR-10
  networks of 6n + 2 layers (20 to 110) with 16, 32 and 64 filters.
- Xie, Girshick, Dollár, Tu, He, "Aggregated Residual Transformations for Deep Neural
  Networks", arXiv:1611.05431: ResNeXt, whose bottleneck 3x3 convolution is split into
  `groups` (the cardinality) paths of `width_per_group` channels each in the first stage.
- Zagoruyko & Komodakis, "Wide Residual Networks", arXiv:1605.07146: `wide_resnet50_2` is
  torchvision's bottleneck variant with twice the bottleneck width.

Module names follow torchvision (`conv1`, `bn1`, `layer1`..`layer4`, `downsample.0/.1`, `fc`)
so that torchvision's state_dicts load as they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import OptionError
from cnnlab.models.layers import ClassifierNet, scaled
from cnnlab.models.registry import (
    ModelOption,
    in_channels_option,
    num_classes_option,
    register_model,
)

# CIFAR-10 training-set channel statistics, the CIFAR variants' metadata (the paper subtracts
# the per-pixel mean; cnnlab's engine normalizes per channel with statistics of the data).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class ZeroPadShortcut(nn.Module):
    """The paper's option A: identity with stride-`stride` subsampling and zero-padded channels.

    Parameter-free; used where a stage changes the number of channels and the map size.
    """

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - x.shape[1]))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BN, added to the shortcut, then ReLU (paper's Fig. 2)."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        width_per_group: int = 64,
    ) -> None:
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise OptionError(
                "BasicBlock takes only groups=1 and width_per_group=64; "
                "use Bottleneck for ResNeXt and wide ResNets"
            )
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        """Zero the last BN's scale so that the residual branch starts as zero."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += shortcut
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand by 4, each with BN (paper's Fig. 5).

    The 3x3 convolution has `groups` paths (ResNeXt's cardinality, Xie et al. Fig. 3c) and
    `int(channels * width_per_group / 64) * groups` channels: `channels` for ResNet, e.g.
    32 x 4 = 128 in the first stage of ResNeXt-50 (32x4d).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        width_per_group: int = 64,
    ) -> None:
        super().__init__()
        width = int(channels * width_per_group / 64) * groups
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        # Deviation (ResNet v1.5, as torchvision's and NVIDIA's): the paper strides the first
        # 1x1 convolution; here the 3x3 carries the stride, which sees every input pixel.
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, channels * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        """Zero the last BN's scale so that the residual branch starts as zero."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += shortcut
        return self.relu(out)


def make_shortcut(in_channels: int, out_channels: int, stride: int, kind: str) -> nn.Module | None:
    """The shortcut of one block: None (identity) where shapes match, else option A or B."""
    if stride == 1 and in_channels == out_channels:
        return None
    if kind == "A":
        return ZeroPadShortcut(out_channels, stride)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def make_stage(
    block: type[BasicBlock | Bottleneck],
    in_channels: int,
    channels: int,
    num_blocks: int,
    *,
    stride: int,
    shortcut: str = "B",
    groups: int = 1,
    width_per_group: int = 64,
) -> nn.Sequential:
    """`num_blocks` blocks of `channels` (x expansion) outputs; only the first may resize."""
    out_channels = channels * block.expansion
    first_shortcut = make_shortcut(in_channels, out_channels, stride, shortcut)
    first = block(in_channels, channels, stride, first_shortcut, groups, width_per_group)
    rest = (
        block(out_channels, channels, 1, None, groups, width_per_group)
        for _ in range(num_blocks - 1)
    )
    return nn.Sequential(first, *rest)


STEMS = ("paper", "cheap")


def make_stem_conv(in_channels: int, channels: int, stem: str, small_input: bool) -> nn.Conv2d:
    """The stem's convolution: 7x7 stride 2 (the paper's ImageNet stem), 3x3 stride 1
    (`small_input`: the CIFAR networks') or 3x3 stride 2 (`cheap`: for 64-128 px inputs)."""
    if stem not in STEMS:
        raise OptionError(f"stem must be one of {', '.join(STEMS)}, not {stem!r}")
    if stem == "cheap" and small_input:
        raise OptionError("stem='cheap' and small_input=True conflict: pick one")
    if stem == "cheap":
        return nn.Conv2d(in_channels, channels, 3, stride=2, padding=1, bias=False)
    if small_input:
        return nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
    return nn.Conv2d(in_channels, channels, 7, stride=2, padding=3, bias=False)


class ResNet(ClassifierNet):
    """A stem, stages `layer1`..`layerN` (each after the first halves the map), pool, fc.

    `layers` gives the number of blocks per stage and `widths` each stage's channel count
    (before the block's expansion). The ImageNet stem is a 7x7 stride-2 convolution and a
    3x3 stride-2 max-pool; `small_input=True` swaps it for the CIFAR networks' 3x3 stride-1
    convolution without pooling, so 32x32 images keep 32x32 maps in the first stage.
    `stem="cheap"` is a 3x3 stride-2 convolution without pooling, for 64-128 px inputs: the
    first stage sees maps of half the input side (a quarter with the paper's stem, the whole
    side with `small_input`). `width` multiplies every stage's channels (and the stem's), so
    0.25-0.5 gives networks between LeNet and ResNet-18 in cost; 1.0 is the paper's network.
    `shortcut` picks option A or B where a block changes shape; `groups` and
    `width_per_group` shape the bottleneck's 3x3 (ResNeXt, wide ResNets).
    """

    classifier_name = "fc"

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        small_input: bool = False,
        stem: str = "paper",
        width: float = 1.0,
        shortcut: str = "B",
        groups: int = 1,
        width_per_group: int = 64,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if shortcut not in ("A", "B"):
            raise OptionError(
                f"shortcut must be 'A' (zero-padding) or 'B' (projection), not {shortcut!r}"
            )
        if num_classes < 1 or in_channels < 1:
            raise OptionError(
                f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}"
            )
        if len(layers) != len(widths) or min(layers) < 1:
            raise OptionError(f"need one width per stage and >= 1 block each: {layers=}, {widths=}")
        widths = [scaled(channels, width) for channels in widths]
        stem_width = widths[0]
        self.conv1 = make_stem_conv(in_channels, stem_width, stem, small_input)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        # Identity keeps the module name (and so every other key of the state_dict) unchanged.
        pooled = stem == "paper" and not small_input
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if pooled else nn.Identity()
        options = {"shortcut": shortcut, "groups": groups, "width_per_group": width_per_group}
        in_width = stem_width
        for index, (num_blocks, width) in enumerate(zip(layers, widths, strict=True)):
            stride = 1 if index == 0 else 2
            stage = make_stage(block, in_width, width, num_blocks, stride=stride, **options)
            self.add_module(f"layer{index + 1}", stage)
            in_width = width * block.expansion
        self.num_stages = len(layers)
        self.num_features = in_width
        self.num_classes = num_classes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """He init (fan_out) for convolutions, BN at 1/0; the fc keeps PyTorch's default.

        `zero_init_residual` zeroes each block's last BN scale so that every block starts as
        the identity (Goyal et al. 2017, arXiv:1706.02677).
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:  # after the loop above, which would reset the scales to 1
            for module in self.modules():
                if isinstance(module, BasicBlock | Bottleneck):
                    module.zero_init_last()

    def stages(self) -> Iterator[nn.Sequential]:
        """The residual stages `layer1`, `layer2`, ... in order."""
        return (getattr(self, f"layer{index}") for index in range(1, self.num_stages + 1))

    def named_stages(self) -> list[tuple[str, nn.Module]]:
        """The stem (`conv1`, `bn1`), the residual stages `layer1`.., then `fc`."""
        stem = ("stem", nn.ModuleList([self.conv1, self.bn1]))
        layers = [(f"layer{index}", stage) for index, stage in enumerate(self.stages(), start=1)]
        return [stem, *layers, ("fc", self.fc)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages():
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)


def _cifar_resnet(blocks_per_stage: int, **options: object) -> ResNet:
    """A CIFAR-10 ResNet of 6n + 2 layers (§4.2): n basic blocks in each of three stages."""
    layers = (blocks_per_stage,) * 3
    return ResNet(BasicBlock, layers, widths=(16, 32, 64), small_input=True, **options)


# Registered variants: each picks a block, a depth per stage and a width.

HE_2015 = "He et al. 2015, arXiv:1512.03385"
XIE_2016 = "Xie et al. 2016, arXiv:1611.05431"
ZAGORUYKO_2016 = "Zagoruyko & Komodakis 2016, arXiv:1605.07146"
IMAGENET_INPUT = (3, 224, 224)

# Options shared by the ImageNet variants and by the CIFAR variants (the paper's defaults).
ZERO_INIT_RESIDUAL = ModelOption(
    False, "start each block's last BN scale at zero, so every block begins as an identity"
)
IMAGENET_OPTIONS = {
    "num_classes": num_classes_option(),
    "in_channels": in_channels_option(),
    "small_input": ModelOption(
        False, "3x3 stride-1 stem without max-pooling, for 32x32 images (CIFAR)"
    ),
    "stem": ModelOption(
        "paper", "'cheap': a 3x3 stride-2 stem without max-pooling, for 64-128 px images"
    ),
    "width": ModelOption(1.0, "channel multiplier of every stage; 0.25-0.5 for small budgets"),
    "zero_init_residual": ZERO_INIT_RESIDUAL,
}
CIFAR_OPTIONS = {
    "num_classes": num_classes_option(10),
    "in_channels": in_channels_option(),
    "shortcut": ModelOption(
        "A", "where a block changes shape: A zero-pads the identity, B projects (1x1 conv)"
    ),
    "width": ModelOption(1.0, "channel multiplier of every stage (2.0: 32-64-128 channels)"),
    "zero_init_residual": ZERO_INIT_RESIDUAL,
}
imagenet_variant = register_model(
    input_size=IMAGENET_INPUT, paper=HE_2015, options=IMAGENET_OPTIONS
)
resnext_variant = register_model(
    input_size=IMAGENET_INPUT, paper=XIE_2016, options=IMAGENET_OPTIONS
)
CIFAR_INPUT = (3, 32, 32)
CIFAR_PAPER = f"{HE_2015}, §4.2 (CIFAR-10)"
cifar_variant = register_model(
    input_size=CIFAR_INPUT,
    paper=CIFAR_PAPER,
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
    options=CIFAR_OPTIONS,
)


@imagenet_variant
def resnet18(**options) -> ResNet:
    """ResNet-18: basic blocks in stages of 2, 2, 2, 2."""
    return ResNet(BasicBlock, (2, 2, 2, 2), **options)


@imagenet_variant
def resnet34(**options) -> ResNet:
    """ResNet-34: basic blocks in stages of 3, 4, 6, 3."""
    return ResNet(BasicBlock, (3, 4, 6, 3), **options)


@imagenet_variant
def resnet50(**options) -> ResNet:
    """ResNet-50: bottleneck blocks in stages of 3, 4, 6, 3."""
    return ResNet(Bottleneck, (3, 4, 6, 3), **options)


@imagenet_variant
def resnet101(**options) -> ResNet:
    """ResNet-101: bottleneck blocks in stages of 3, 4, 23, 3."""
    return ResNet(Bottleneck, (3, 4, 23, 3), **options)


@imagenet_variant
def resnet152(**options) -> ResNet:
    """ResNet-152: bottleneck blocks in stages of 3, 8, 36, 3."""
    return ResNet(Bottleneck, (3, 8, 36, 3), **options)


@resnext_variant
def resnext50_32x4d(**options) -> ResNet:
    """ResNeXt-50 (32x4d): ResNet-50 with 32 groups of 4 channels in the first stage's 3x3."""
    return ResNet(Bottleneck, (3, 4, 6, 3), groups=32, width_per_group=4, **options)


@resnext_variant
def resnext101_32x8d(**options) -> ResNet:
    """ResNeXt-101 (32x8d): ResNet-101 with 32 groups of 8 channels in the first stage's 3x3."""
    return ResNet(Bottleneck, (3, 4, 23, 3), groups=32, width_per_group=8, **options)


@resnext_variant
def resnext101_64x4d(**options) -> ResNet:
    """ResNeXt-101 (64x4d): ResNet-101 with 64 groups of 4 channels in the first stage's 3x3."""
    return ResNet(Bottleneck, (3, 4, 23, 3), groups=64, width_per_group=4, **options)


@register_model(input_size=IMAGENET_INPUT, paper=ZAGORUYKO_2016, options=IMAGENET_OPTIONS)
def wide_resnet50_2(**options) -> ResNet:
    """Wide ResNet-50-2: ResNet-50 with bottlenecks twice as wide (torchvision's variant)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), width_per_group=128, **options)


@cifar_variant
def resnet20(**options) -> ResNet:
    """ResNet-20 for CIFAR-10: 3 basic blocks per stage, 0.27M parameters."""
    return _cifar_resnet(3, **options)


@cifar_variant
def resnet32(**options) -> ResNet:
    """ResNet-32 for CIFAR-10: 5 basic blocks per stage, 0.46M parameters."""
    return _cifar_resnet(5, **options)


@cifar_variant
def resnet44(**options) -> ResNet:
    """ResNet-44 for CIFAR-10: 7 basic blocks per stage, 0.66M parameters."""
    return _cifar_resnet(7, **options)


@cifar_variant
def resnet56(**options) -> ResNet:
    """ResNet-56 for CIFAR-10: 9 basic blocks per stage, 0.85M parameters."""
    return _cifar_resnet(9, **options)


@cifar_variant
def resnet110(**options) -> ResNet:
    """ResNet-110 for CIFAR-10: 18 basic blocks per stage, 1.7M parameters."""
    return _cifar_resnet(18, **options)
