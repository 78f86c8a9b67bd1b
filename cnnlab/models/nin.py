"""Network in Network, from Lin, Chen & Yan, "Network In Network", ICLR 2014, arXiv:1312.4400.

An mlpconv block is a k x k convolution followed by two 1x1 convolutions (a small MLP slid over
the image), with a ReLU after each. Max-pooling and dropout separate the blocks; the last block
ends in one map per class, and the global average of each map is that class's logit: there is
no fully connected layer.

The default configuration is the ImageNet one that d2l teaches: 96-256-384 maps with 11x11,
5x5 and 3x3 kernels and 224x224 inputs, then a 3x3 mlpconv ending in the class maps.
`small_input=True` builds the paper's CIFAR-10 network instead (section 4.2, as the Caffe Model
Zoo's "NIN CIFAR10" defines it): three mlpconv blocks of 192-160-96, 192-192-192 and
192-192-classes maps with 5x5, 5x5 and 3x3 kernels, for 32x32 (and 28x28) images.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from cnnlab.models.layers import ClassifierNet
from cnnlab.models.registry import (
    ModelOption,
    in_channels_option,
    num_classes_option,
    register_model,
)


class MLPConv(nn.Sequential):
    """A k x k convolution and 1x1 convolutions, each followed by a ReLU.

    `widths` are the output channels of each layer in turn, the k x k convolution's first.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], kernel_size, stride=stride, padding=padding),
            nn.ReLU(inplace=True),
        ]
        for previous, channels in pairwise(widths):
            layers += [nn.Conv2d(previous, channels, kernel_size=1), nn.ReLU(inplace=True)]
        super().__init__(*layers)


def imagenet_features(in_channels: int, dropout: float) -> nn.Sequential:
    """The ImageNet trunk: four mlpconv blocks, the last 1024 maps wide (see `NiN`)."""
    # Dropout follows every mlpconv block but the last (the paper's section 4.1); d2l keeps
    # only the one before the last block.
    return nn.Sequential(
        MLPConv(in_channels, (96, 96, 96), 11, stride=4),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Dropout(dropout),
        MLPConv(96, (256, 256, 256), 5, padding=2),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Dropout(dropout),
        MLPConv(256, (384, 384, 384), 3, padding=1),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Dropout(dropout),
        MLPConv(384, (1024, 1024), 3, padding=1),
    )


def cifar_features(in_channels: int, dropout: float) -> nn.Sequential:
    """The CIFAR-10 trunk (section 4.2; Caffe's "NIN CIFAR10"): conv1 to cccp5, 192 maps out."""
    # Caffe rounds pooled sizes up (`ceil_mode`): 32 -> 16 -> 8, the 8x8 maps its final 8x8
    # average pool takes (rounding down would give 15 -> 7); 28x28 inputs give 14 -> 7.
    return nn.Sequential(
        MLPConv(in_channels, (192, 160, 96), 5, padding=2),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        nn.Dropout(dropout),
        MLPConv(96, (192, 192, 192), 5, padding=2),
        # The paper speaks of max pooling after each mlpconv block; the released Caffe model
        # averages here, and cnnlab follows the model.
        nn.AvgPool2d(kernel_size=3, stride=2, ceil_mode=True),
        nn.Dropout(dropout),
        # conv3 and cccp5; the paper's last 1x1 layer (cccp6, one map per class) is `classifier`.
        MLPConv(192, (192, 192), 3, padding=1),
    )


class NiN(ClassifierNet):
    """Network in Network: mlpconv blocks, class maps from a 1x1 convolution, global averaging.

    The classifier is the last block's final 1x1 convolution, kept apart from `features` so that
    `reset_classifier` swaps it. d2l's last block is `num_classes` maps wide throughout; here it
    is 1024 wide up to the classifier, as in the ImageNet model released with Caffe's Model
    Zoo, so that a new head is one layer. With `small_input` (the CIFAR-10 network) the
    classifier is exactly the paper's last layer, the 192 -> classes 1x1 convolution (cccp6).
    """

    classifier_name = "classifier"

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.5,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        if small_input:
            self.features = cifar_features(in_channels, dropout)
            self.classifier = nn.Conv2d(192, num_classes, kernel_size=1)
        else:
            self.features = imagenet_features(in_channels, dropout)
            self.classifier = nn.Conv2d(1024, num_classes, kernel_size=1)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # No ReLU after the classifier (d2l has one, and so has cccp6 in the Caffe CIFAR-10 model):
        # its maps are class-score maps whose means are the logits. Averaging and a 1x1
        # convolution are both linear, so they commute: logits = W . mean(features) + b, exactly
        # the fc-weights-times-feature-maps product classic CAM assumes, and `pre_logits` is
        # that mean.
        if pre_logits:
            return torch.flatten(self.global_pool(x), 1)
        return torch.flatten(self.global_pool(self.classifier(x)), 1)


NIN_OPTIONS = {
    "num_classes": num_classes_option(),
    "in_channels": in_channels_option(),
    "dropout": ModelOption(0.5, "dropout probability after every mlpconv block but the last"),
    "small_input": ModelOption(
        False, "the paper's CIFAR-10 network (three 192-wide mlpconv blocks), for 28-32 px images"
    ),
}


@register_model(
    input_size=(3, 224, 224), paper="Lin, Chen & Yan 2013, arXiv:1312.4400", options=NIN_OPTIONS
)
def nin(**options) -> NiN:
    """Network in Network: mlpconv blocks and global average pooling, no FC layer."""
    return NiN(**options)
