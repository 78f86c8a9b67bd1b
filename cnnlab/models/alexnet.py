"""AlexNet and ZFNet: five convolutions, three max-pools and three fully connected layers.

- Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
  Networks", NeurIPS 2012 (`alexnet_original`).
- Krizhevsky, "One weird trick for parallelizing convolutional neural networks",
  arXiv:1404.5997, 2014: the single-GPU 64-192-384-256-256 network that torchvision ships
  (`alexnet`, with torchvision's module names and parameter count).
- Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014,
  arXiv:1311.2901 (`zfnet`).

Each member is a row of data (`SPECS`): its convolutions, where the local response
normalizations and pools go, and how its paper initialized and regularized it. `small_input`
swaps the first convolution for a 3x3 stride-1 one, for 28-32 px images (`small_input_spec`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import nn

from cnnlab.models.layers import ClassifierNet, scaled
from cnnlab.models.registry import (
    ModelOption,
    dropout_option,
    in_channels_option,
    num_classes_option,
    register_model,
)

LRN = "LRN"
POOL = "M"


class Conv(NamedTuple):
    """One convolution of the trunk, followed by a ReLU.

    `tower_local` marks the convolutions that in the two-GPU AlexNet see only the maps on their
    own GPU; `bias` is the initial bias (Krizhevsky et al. start some layers at 1).
    """

    channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    tower_local: bool = False
    bias: float = 0.0


@dataclass(frozen=True)
class AlexNetSpec:
    """One member of the family: its trunk and how its paper trained it."""

    layers: tuple[Conv | str, ...]
    # Dropout on the inputs of fc6 and fc7 (torchvision) or on their outputs (both papers).
    dropout_first: bool = False
    # Zeiler & Fergus's 110 -> 55 and 26 -> 13 pooled sizes round up, as Caffe's pooling does.
    ceil_mode: bool = False
    # Std of the zero-mean Gaussian weights (0.01 in both papers); None keeps PyTorch's
    # default initialization, as torchvision does.
    init_std: float | None = 0.01
    # Initial bias of fc6 and fc7.
    hidden_bias: float = 0.0


SPECS: dict[str, AlexNetSpec] = {
    "torchvision": AlexNetSpec(
        layers=(
            Conv(64, 11, stride=4, padding=2), POOL,
            Conv(192, 5, padding=2), POOL,
            Conv(384, 3, padding=1),
            Conv(256, 3, padding=1),
            Conv(256, 3, padding=1), POOL,
        ),
        dropout_first=True,
        init_std=None,
    ),
    # Section 3.5 and Fig. 2. The paper says 224x224 inputs, but its 55x55 first maps need 227.
    # Biases of conv2, conv4, conv5 and the hidden FC layers start at 1, which gives the ReLUs
    # positive inputs early in training; the others start at 0.
    "krizhevsky2012": AlexNetSpec(
        layers=(
            Conv(96, 11, stride=4), LRN, POOL,
            Conv(256, 5, padding=2, tower_local=True, bias=1.0), LRN, POOL,
            Conv(384, 3, padding=1),
            Conv(384, 3, padding=1, tower_local=True, bias=1.0),
            Conv(256, 3, padding=1, tower_local=True, bias=1.0), POOL,
        ),
        hidden_bias=1.0,
    ),
    # Fig. 3, with the 512-1024-512 maps in layers 3-5 of Table 2's best single model (b);
    # Fig. 3 itself keeps AlexNet's 384-384-256. The paper gives no paddings: 1 in the first
    # layer reproduces its 110x110 maps. Its contrast normalization across feature maps is
    # taken to be AlexNet's LRN, whose parameters it does not restate.
    "zeiler_fergus2013": AlexNetSpec(
        layers=(
            Conv(96, 7, stride=2, padding=1), LRN, POOL,
            Conv(256, 5, stride=2), LRN, POOL,
            Conv(512, 3, padding=1),
            Conv(1024, 3, padding=1),
            Conv(512, 3, padding=1), POOL,
        ),
        ceil_mode=True,
    ),
}  # fmt: skip


def small_input_spec(spec: AlexNetSpec) -> AlexNetSpec:
    """`spec` with a 3x3 stride-1 first convolution (padding 1), as the CIFAR ResNets' stem.

    Not in the papers. Their first layer (11x11 stride 4; ZFNet's 7x7 stride 2) leaves 32x32
    images 6x6 to 14x14 maps, too small for the three poolings that follow. The rest of the
    network is unchanged: 28x28 and 32x32 images end in 2x2 and 3x3 maps (ZFNet, whose second
    convolution keeps its stride of 2, in 1x1).
    """
    first, *rest = spec.layers
    stem = first._replace(kernel_size=3, stride=1, padding=1)
    return replace(spec, layers=(stem, *rest))


def local_response_norm() -> nn.LocalResponseNorm:
    """Section 3.3: b = a / (k + alpha * sum of a^2 over 5 adjacent maps) ** beta.

    k = 2, alpha = 1e-4, beta = 0.75. PyTorch (like Caffe) divides alpha by the window size,
    which the paper's formula does not, so the paper's alpha is passed multiplied by 5.
    """
    size = 5
    return nn.LocalResponseNorm(size, alpha=size * 1e-4, beta=0.75, k=2.0)


def make_trunk(
    layers: Sequence[Conv | str],
    in_channels: int,
    *,
    tower_groups: int = 1,
    ceil_mode: bool = False,
    width: float = 1.0,
) -> nn.Sequential:
    """The convolutional trunk: each `Conv` followed by a ReLU, `LRN` and `POOL` markers.

    Pooling is Krizhevsky et al.'s overlapping max-pooling, 3x3 windows with stride 2.
    `tower_groups` is the number of groups of the tower-local convolutions; `width`
    multiplies every convolution's channels (kept divisible by the groups).
    """
    modules: list[nn.Module] = []
    for layer in layers:
        if isinstance(layer, Conv):
            channels = scaled(layer.channels, width, tower_groups)
            conv = nn.Conv2d(
                in_channels,
                channels,
                layer.kernel_size,
                stride=layer.stride,
                padding=layer.padding,
                groups=tower_groups if layer.tower_local else 1,
            )
            modules += [conv, nn.ReLU(inplace=True)]
            in_channels = channels
        elif layer == LRN:
            modules.append(local_response_norm())
        else:
            modules.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=ceil_mode))
    return nn.Sequential(*modules)


def fully_connected_head(
    in_features: int,
    num_classes: int,
    dropout: float,
    *,
    dropout_first: bool = False,
    hidden_units: int = 4096,
) -> nn.Sequential:
    """fc6 and fc7 (4096 ReLU units, each with dropout) and the final classifier, at index 6.

    With `dropout_first` dropout acts on the inputs of fc6 and fc7 (torchvision's AlexNet),
    otherwise on their outputs (the AlexNet paper, and VGG, which keeps this head).
    `hidden_units` sizes fc6 and fc7 for narrower (`width` < 1) networks.
    """
    modules: list[nn.Module] = []
    for fan_in in (in_features, hidden_units):
        hidden = [nn.Linear(fan_in, hidden_units), nn.ReLU(inplace=True)]
        modules += (
            [nn.Dropout(dropout), *hidden] if dropout_first else [*hidden, nn.Dropout(dropout)]
        )
    return nn.Sequential(*modules, nn.Linear(hidden_units, num_classes))


class AlexNet(ClassifierNet):
    """AlexNet-style network: `features`, `avgpool` to 6x6, `classifier` (torchvision's names).

    The adaptive average pool is not in either paper: it is the identity at the papers' input
    sizes and lets other sizes reach the 6x6 maps that fc6 expects, as in torchvision.
    `small_input=True` puts a 3x3 stride-1 first convolution (`small_input_spec`) and global
    pooling, for 28-32 px images. `width` multiplies the channels of every convolution and the
    4096 units of fc6 and fc7.
    """

    classifier_name = "classifier.6"

    def __init__(
        self,
        spec: AlexNetSpec,
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.5,
        two_towers: bool = False,
        small_input: bool = False,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        if small_input:
            spec = small_input_spec(spec)
        self.features = make_trunk(
            spec.layers,
            in_channels,
            tower_groups=2 if two_towers else 1,
            ceil_mode=spec.ceil_mode,
            width=width,
        )
        feature_channels = [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels
        # Deviation (small_input): global pooling. Small images leave 1x1 to 3x3 maps, which a
        # pool to 6x6 would copy 4 to 36 times into fc6's input; the global average gives fc6
        # one value per map at every input size, as in NiN and the ResNets.
        pooled = 1 if small_input else 6
        self.avgpool = nn.AdaptiveAvgPool2d((pooled, pooled))
        self.classifier = fully_connected_head(
            feature_channels * pooled * pooled,
            num_classes,
            dropout,
            dropout_first=spec.dropout_first,
            hidden_units=scaled(4096, width),
        )
        self._init_weights(spec)

    def _init_weights(self, spec: AlexNetSpec) -> None:
        """Both papers: zero-mean Gaussian weights with std `init_std`, biases as in `spec`."""
        if spec.init_std is None:
            return  # torchvision keeps PyTorch's default initialization
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        conv_biases = [layer.bias for layer in spec.layers if isinstance(layer, Conv)]
        biases = [*conv_biases, spec.hidden_bias, spec.hidden_bias, 0.0]
        for layer, bias in zip(convs + linears, biases, strict=True):
            nn.init.normal_(layer.weight, 0.0, spec.init_std)
            nn.init.constant_(layer.bias, bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        x = self.classifier[:-1](x)
        return x if pre_logits else self.classifier[-1](x)


WIDTH_OPTION = ModelOption(
    1.0, "channel multiplier of every convolution and of fc6/fc7's units (0.25: ~1/16 cost)"
)
ALEXNET_OPTIONS = {
    "num_classes": num_classes_option(),
    "in_channels": in_channels_option(),
    "dropout": dropout_option(0.5),
    "small_input": ModelOption(
        False, "3x3 stride-1 first convolution and global pooling, for 28-32 px images"
    ),
    "width": WIDTH_OPTION,
}
ORIGINAL_OPTIONS = {
    **ALEXNET_OPTIONS,
    "two_towers": ModelOption(
        False, "the paper's two-GPU split as grouped convolutions in conv2, conv4 and conv5"
    ),
}


@register_model(
    input_size=(3, 224, 224), paper="Krizhevsky 2014, arXiv:1404.5997", options=ALEXNET_OPTIONS
)
def alexnet(**options) -> AlexNet:
    """AlexNet as in torchvision: single GPU, 64-192-384-256-256 maps, no LRN, 61.1M parameters.

    `width` multiplies every layer's channels and hidden units (0.25: about 4.6M parameters).
    """
    return AlexNet(SPECS["torchvision"], **options)


@register_model(
    input_size=(3, 227, 227), paper="Krizhevsky et al. 2012, NeurIPS", options=ORIGINAL_OPTIONS
)
def alexnet_original(**options) -> AlexNet:
    """AlexNet as published: 96-256-384-384-256 maps, LRN, overlapping pooling, 227x227 inputs.

    The paper split the network over two GPUs, with conv2, conv4 and conv5 seeing only the maps
    on their own GPU. By default this is one tower (62.4M parameters); `two_towers=True`
    reproduces the split as grouped convolutions (groups=2, the paper's 61.0M parameters).
    The LRNs then also span the two towers' maps where they meet; each GPU normalized only its own.
    `width` multiplies every layer's channels and hidden units.
    """
    return AlexNet(SPECS["krizhevsky2012"], **options)


@register_model(
    input_size=(3, 224, 224), paper="Zeiler & Fergus 2013, arXiv:1311.2901", options=ALEXNET_OPTIONS
)
def zfnet(**options) -> AlexNet:
    """ZFNet: AlexNet with a 7x7 stride-2 first layer and 512-1024-512 maps in layers 3-5.

    At 224x224 the maps are 110x110x96, pooled 55x55x96, 26x26x256, pooled 13x13x256,
    13x13x512, 13x13x1024, 13x13x512, pooled 6x6x512, then 4096, 4096 and the classes.
    `width` multiplies every layer's channels and hidden units.
    """
    return AlexNet(SPECS["zeiler_fergus2013"], **options)
