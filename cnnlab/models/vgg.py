"""VGG, from Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015, arXiv:1409.1556.

Stacks of 3x3 convolutions (stride 1, padding 1) separated by 2x2 max-pools, then AlexNet's
three fully connected layers. The variants differ only in the number of convolutions per stage:
configurations A, B, D and E of the paper's Table 1 are VGG-11, -13, -16 and -19. Module names
match torchvision's, so its state_dicts load as they are.

`small_input=True` gives the CIFAR form of the literature (Zagoruyko 2015, "92.45% on CIFAR-10
in Torch"; kuangliu's pytorch-cifar): the same convolutions, global pooling of the 1x1 maps
that 32x32 images leave, and 512-unit hidden layers in place of 4096.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models.alexnet import WIDTH_OPTION, fully_connected_head
from cnnlab.models.layers import ClassifierNet, scaled
from cnnlab.models.registry import (
    ModelOption,
    dropout_option,
    in_channels_option,
    num_classes_option,
    register_model,
)

POOL = "M"

# Table 1: output channels of each 3x3 convolution, POOL for a 2x2 max-pool. The paper's A-LRN
# (A with a local response normalization) and C (D with 1x1 convolutions in its last three
# stages) are left out, as in torchvision.
CONFIGS: dict[str, list[int | str]] = {
    "A": [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "B": [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "D": [
        64, 64, POOL,
        128, 128, POOL,
        256, 256, 256, POOL,
        512, 512, 512, POOL,
        512, 512, 512, POOL,
    ],
    "E": [
        64, 64, POOL,
        128, 128, POOL,
        256, 256, 256, 256, POOL,
        512, 512, 512, 512, POOL,
        512, 512, 512, 512, POOL,
    ],
}  # fmt: skip


def make_features(
    config: list[int | str],
    in_channels: int,
    batch_norm: bool,
    width: float = 1.0,
    ceil_mode: bool = False,
) -> nn.Sequential:
    """The convolutional trunk: 3x3 convolutions with ReLU, optional batch norm, 2x2 max-pools.

    Batch normalization is not in the paper (it came later, Ioffe & Szegedy 2015); the `_bn`
    variants put it between each convolution and its ReLU, as torchvision does. `width`
    multiplies every convolution's channels; `ceil_mode` rounds the pooled sizes up.
    """
    layers: list[nn.Module] = []
    for entry in config:
        if entry == POOL:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode))
            continue
        out_channels = scaled(int(entry), width)
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        in_channels = out_channels
    return nn.Sequential(*layers)


class VGG(ClassifierNet):
    """VGG network: `features`, `avgpool` to 7x7, `classifier` (torchvision's module names).

    The adaptive average pool is not in the paper: it is the identity at 224x224 and lets other
    input sizes reach the 7x7 maps that the first fully connected layer expects (the paper
    instead turned the fully connected layers into convolutions for dense evaluation).
    `small_input=True` is the CIFAR form (see the module docstring), for 28-32 px images.
    `width` multiplies the channels of every convolution and the units of fc6 and fc7.
    """

    classifier_name = "classifier.6"

    def __init__(
        self,
        config: list[int | str],
        *,
        batch_norm: bool = False,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.5,
        small_input: bool = False,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        # Deviation (small_input): pooled sizes round up, so 28x28 images still reach 1x1 maps
        # after five poolings (28, 14, 7, 4, 2, 1); 32x32 ones halve exactly as before.
        self.features = make_features(config, in_channels, batch_norm, width, small_input)
        last_channels = [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels
        # Deviation (small_input, the CIFAR VGGs): global pooling of the 1x1 maps instead of
        # copying each 49 times to 7x7, and fc6/fc7 of 512 units instead of 4096, which hold
        # 119.5M of VGG-11's 128.8M parameters at 10 classes. Zagoruyko's head is one 512-unit
        # hidden layer (with BN), kuangliu's a single linear layer; torchvision's layout is kept.
        pooled, hidden_units = (1, 512) if small_input else (7, 4096)
        self.avgpool = nn.AdaptiveAvgPool2d((pooled, pooled))
        self.classifier = fully_connected_head(
            last_channels * pooled * pooled,
            num_classes,
            dropout,
            hidden_units=scaled(hidden_units, width),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's initialization: He-normal (fan-out) convolutions, linears of std 0.01.

        The paper trained configuration A from zero-mean Gaussian weights of variance 1e-2 and
        started the deeper nets' first four convolutions and three FC layers from A's, noting
        that Glorot initialization makes this pre-training unnecessary.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.classifier[:-1](torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.classifier[-1](x)


_PAPER = "Simonyan & Zisserman 2014, arXiv:1409.1556"


VGG_OPTIONS = {
    "num_classes": num_classes_option(),
    "in_channels": in_channels_option(),
    "dropout": dropout_option(0.5),
    "small_input": ModelOption(
        False, "CIFAR form for 28-32 px images: ceil-mode pools, global pooling, fc6/fc7 of 512"
    ),
    "width": WIDTH_OPTION,
}
vgg_variant = register_model(input_size=(3, 224, 224), paper=_PAPER, options=VGG_OPTIONS)


@vgg_variant
def vgg11(**options) -> VGG:
    """VGG-11: configuration A, eight 3x3 convolutions and three fully connected layers."""
    return VGG(CONFIGS["A"], batch_norm=False, **options)


@vgg_variant
def vgg13(**options) -> VGG:
    """VGG-13: configuration B, ten 3x3 convolutions and three fully connected layers."""
    return VGG(CONFIGS["B"], batch_norm=False, **options)


@vgg_variant
def vgg16(**options) -> VGG:
    """VGG-16: configuration D, thirteen 3x3 convolutions and three fully connected layers."""
    return VGG(CONFIGS["D"], batch_norm=False, **options)


@vgg_variant
def vgg19(**options) -> VGG:
    """VGG-19: configuration E, sixteen 3x3 convolutions and three fully connected layers."""
    return VGG(CONFIGS["E"], batch_norm=False, **options)


@vgg_variant
def vgg11_bn(**options) -> VGG:
    """VGG-11 with batch normalization after every convolution (torchvision's vgg11_bn)."""
    return VGG(CONFIGS["A"], batch_norm=True, **options)


@vgg_variant
def vgg13_bn(**options) -> VGG:
    """VGG-13 with batch normalization after every convolution (torchvision's vgg13_bn)."""
    return VGG(CONFIGS["B"], batch_norm=True, **options)


@vgg_variant
def vgg16_bn(**options) -> VGG:
    """VGG-16 with batch normalization after every convolution (torchvision's vgg16_bn)."""
    return VGG(CONFIGS["D"], batch_norm=True, **options)


@vgg_variant
def vgg19_bn(**options) -> VGG:
    """VGG-19 with batch normalization after every convolution (torchvision's vgg19_bn)."""
    return VGG(CONFIGS["E"], batch_norm=True, **options)
