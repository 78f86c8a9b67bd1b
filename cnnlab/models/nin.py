"""Network in Network, from Lin, Chen & Yan, "Network In Network", ICLR 2014, arXiv:1312.4400.

An mlpconv block is a k x k convolution followed by two 1x1 convolutions (a small MLP slid over
the image), with a ReLU after each. Max-pooling and dropout separate the blocks; the last block
ends in one map per class, and the global average of each map is that class's logit: there is
no fully connected layer.

The configuration is the ImageNet one that d2l teaches: 96-256-384 maps with 11x11, 5x5 and
3x3 kernels and 224x224 inputs, then a 3x3 mlpconv ending in the class maps.
"""

from __future__ import annotations

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
    """A k x k convolution and `pointwise` 1x1 convolutions, each followed by a ReLU."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        pointwise: int = 2,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, kernel_size, stride=stride, padding=padding),
            nn.ReLU(inplace=True),
        ]
        for _ in range(pointwise):
            layers += [nn.Conv2d(channels, channels, kernel_size=1), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class NiN(ClassifierNet):
    """Network in Network: mlpconv blocks, class maps from a 1x1 convolution, global averaging.

    The classifier is the last block's final 1x1 convolution, kept apart from `features` so that
    `reset_classifier` swaps it. d2l's last block is `num_classes` maps wide throughout; here it
    is 1024 wide up to the classifier, as in the ImageNet model released with Caffe's Model
    Zoo, so that a new head is one layer.
    """

    classifier_name = "classifier"

    def __init__(
        self, *, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        # Dropout follows every mlpconv block but the last (the paper's section 4.1); d2l keeps
        # only the one before the last block.
        self.features = nn.Sequential(
            MLPConv(in_channels, 96, 11, stride=4),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Dropout(dropout),
            MLPConv(96, 256, 5, padding=2),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Dropout(dropout),
            MLPConv(256, 384, 3, padding=1),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Dropout(dropout),
            MLPConv(384, 1024, 3, padding=1, pointwise=1),
        )
        self.classifier = nn.Conv2d(1024, num_classes, kernel_size=1)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # No ReLU after the classifier (d2l has one): its maps are class-score maps whose means
        # are the logits. Averaging and a 1x1 convolution are both linear, so they commute:
        # logits = W . mean(features) + b, exactly the fc-weights-times-feature-maps product
        # classic CAM assumes, and `pre_logits` is that mean.
        if pre_logits:
            return torch.flatten(self.global_pool(x), 1)
        return torch.flatten(self.global_pool(self.classifier(x)), 1)


NIN_OPTIONS = {
    "num_classes": num_classes_option(),
    "in_channels": in_channels_option(),
    "dropout": ModelOption(0.5, "dropout probability after each of the first three mlpconv blocks"),
}


@register_model(
    input_size=(3, 224, 224), paper="Lin, Chen & Yan 2013, arXiv:1312.4400", options=NIN_OPTIONS
)
def nin(**options) -> NiN:
    """Network in Network: four mlpconv blocks and global average pooling, no FC layer."""
    return NiN(**options)
