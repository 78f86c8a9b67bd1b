"""GoogLeNet (Inception-v1): Szegedy et al., "Going Deeper with Convolutions", arXiv:1409.4842.

Read it beside the paper's Table 1 (layer sizes) and Figure 3 (the network). Module for module
it is torchvision's `GoogLeNet`, with the same names and parameter shapes, so torchvision's
ImageNet weights load with a strict `load_state_dict`. Where torchvision departs from the paper
this file does too, and a comment says so where it happens: batch normalization after every
convolution, a 3x3 convolution in the branch the paper calls 5x5, a 2x2 max pool before the last
stage, adaptive pooling in the auxiliary heads.

`small_input=True` is cnnlab's, for 28-32 px images, by analogy with Inception-v3's network for
low-resolution input (arXiv:1512.00567, Section 9): `conv1` has stride 1 and `maxpool1` is
gone, so a 32x32 image reaches inception3a at 16x16, inception4 at 8x8 and inception5 at 4x4
(28x28: 14, 7, 4) instead of 4, 2 and 1. Its parameters and state_dict are the default
network's, so the same weights load.

torchvision's `transform_input` is left out on purpose: cnnlab normalizes in the data pipeline.
torchvision's weights (ported from TensorFlow) expect inputs scaled to [-1, 1], which is why the
entrypoint registers mean = std = 0.5 rather than the ImageNet statistics.

Inception-v3 (`inception.py`) grew out of this network and imports its shared parts from here:
the conv-BN-ReLU unit, the truncated-normal initialization and `InceptionNet`, the classifier
API of a network with auxiliary heads.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.errors import OptionError
from cnnlab.models.layers import AuxOutputs, ClassifierNet
from cnnlab.models.registry import (
    ModelOption,
    dropout_option,
    in_channels_option,
    num_classes_option,
    register_model,
)

INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
AUX_DROPOUT = 0.7  # the paper's dropout in GoogLeNet's auxiliary heads


class ConvBNReLU(nn.Module):
    """Convolution (no bias), batch normalization, ReLU: the unit every Inception branch is made of.

    The paper's GoogLeNet has no batch normalization (it predates it); torchvision's adds it after
    every convolution, with TensorFlow's epsilon of 1e-3, and so does cnnlab.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def init_truncated_normal(module: nn.Module, std: float) -> None:
    """Initialize as torchvision's Inception networks do: conv and linear weights from a normal
    of standard deviation `std` truncated at +-2 (absolute, so in effect untruncated for small
    `std`), batch-norm layers to the identity. Linear biases keep PyTorch's default."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            nn.init.trunc_normal_(layer.weight, mean=0.0, std=std, a=-2.0, b=2.0)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def check_options(*, num_classes: int, in_channels: int, **dropouts: float) -> None:
    """Raise `OptionError` for a class or channel count below 1 or a dropout outside [0, 1)."""
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if value < 1:
            raise OptionError(f"{name} must be at least 1, got {value}")
    for name, rate in dropouts.items():
        if not 0.0 <= rate < 1.0:
            raise OptionError(f"{name} is a drop probability in [0, 1), got {rate}")


class Inception(nn.Module):
    """The Inception module of Figure 2(b): four parallel branches, concatenated along channels.

    Arguments follow the columns of Table 1: `#1x1`, `#3x3 reduce`, `#3x3`, `#5x5 reduce`,
    `#5x5`, `pool proj`.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3_reduce: int,
        ch3x3: int,
        ch5x5_reduce: int,
        ch5x5: int,
        pool_proj: int,
        paper_5x5: bool = False,
    ) -> None:
        super().__init__()
        self.branch1 = ConvBNReLU(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            ConvBNReLU(in_channels, ch3x3_reduce, kernel_size=1),
            ConvBNReLU(ch3x3_reduce, ch3x3, kernel_size=3, padding=1),
        )
        # The paper's third branch is a 5x5 convolution. torchvision's (like the TensorFlow model
        # its weights come from) is a 3x3, pytorch/vision#906; it stays 3x3 by default so those
        # weights load, and `paper_5x5=True` restores the paper's 5x5.
        wide = 5 if paper_5x5 else 3
        self.branch3 = nn.Sequential(
            ConvBNReLU(in_channels, ch5x5_reduce, kernel_size=1),
            ConvBNReLU(ch5x5_reduce, ch5x5, kernel_size=wide, padding=wide // 2),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            ConvBNReLU(in_channels, pool_proj, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([branch(x) for branch in branches], dim=1)


class InceptionAux(ClassifierNet):
    """An auxiliary classifier on an intermediate 14x14 map (Section 5 of the paper).

    The paper's head: 5x5 average pool with stride 3 (14x14 -> 4x4), 1x1 convolution with 128
    filters and ReLU, fully connected 1024 with ReLU, 70% dropout, linear classifier.
    """

    classifier_name = "fc2"

    def __init__(self, in_channels: int, num_classes: int, dropout: float = AUX_DROPOUT) -> None:
        super().__init__()
        self.num_classes = num_classes
        # torchvision pools adaptively to 4x4 instead of the paper's fixed 5x5/3 window: the same
        # 4x4 grid at 14x14 (from slightly different windows), and any input size works, e.g.
        # the 8x8 and 7x7 maps of `small_input` at 32 and 28 px (a 5x5/3 pool: 2x2 and 1x1).
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.conv = ConvBNReLU(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(self.act(self.fc1(torch.flatten(x, 1))))
        return x if pre_logits else self.fc2(x)


class InceptionNet(ClassifierNet):
    """A convolutional trunk with auxiliary classifiers tapped off it, then global average
    pooling, dropout and one linear classifier `fc`: GoogLeNet and Inception-v3.

    Subclasses build their trunk and auxiliary heads, then call `add_head`; they implement
    `forward_trunk` and name their auxiliary heads in `aux_head_names`. In training mode with
    auxiliary heads `forward` returns `AuxOutputs`; in eval mode the heads are skipped and it
    returns plain logits, as the paper discards them at inference. `forward_features` and
    `forward_head` never touch the auxiliary heads, so CAM and transfer treat these networks like
    any other.
    """

    classifier_name = "fc"
    aux_head_names: tuple[str, ...] = ()
    aux_loss_weight: float

    def add_head(self, num_features: int, num_classes: int, dropout: float) -> None:
        """Append global average pooling, dropout and `fc`, after the trunk and auxiliary heads."""
        self.num_classes = num_classes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_features, num_classes)

    def aux_heads(self) -> list[ClassifierNet]:
        """The auxiliary classifiers the network was built with (none with `aux_logits=False`)."""
        heads = (getattr(self, name) for name in self.aux_head_names)
        return [head for head in heads if head is not None]

    def forward_trunk(
        self, x: torch.Tensor, with_aux: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The last feature maps and, if `with_aux`, the auxiliary logits in network order."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_trunk(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | AuxOutputs:
        with_aux = self.training and bool(self.aux_heads())
        features, aux_logits = self.forward_trunk(x, with_aux)
        logits = self.forward_head(features)
        return AuxOutputs(logits, aux_logits) if with_aux else logits

    def named_stages(self) -> list[tuple[str, nn.Module]]:
        """The stem's convolutions, each Inception module, then `fc`; no auxiliary head."""
        return [
            (name, module)
            for name, module in self.named_children()
            if name not in self.aux_head_names and any(True for _ in module.parameters())
        ]

    def reset_classifier(self, num_classes: int, hidden: int = 0) -> None:
        """Replace `fc` (with a hidden layer first if `hidden`) and the auxiliary heads'
        classifiers with fresh ones for `num_classes`."""
        super().reset_classifier(num_classes, hidden)
        for head in self.aux_heads():
            head.reset_classifier(num_classes)


class GoogLeNet(InceptionNet):
    """GoogLeNet: a stem of plain convolutions, nine Inception modules in three stages (3a-3b,
    4a-4e, 5a-5b) separated by max pooling, and two auxiliary classifiers on 4a and 4d.

    Every max pool rounds its output size up (`ceil_mode=True`), as Caffe did, which gives the
    paper's 112 -> 56 -> 28 -> 14 -> 7 grid at 224x224. `small_input=True` drops the stem's first
    downsampling by 4 (see the module docstring), for 28-32 px images.
    """

    aux_head_names = ("aux1", "aux2")
    aux_loss_weight = 0.3  # the paper's discount weight for each auxiliary loss

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        aux_logits: bool = True,
        dropout: float = 0.2,
        aux_dropout: float = AUX_DROPOUT,
        paper_5x5: bool = False,
        small_input: bool = False,
    ) -> None:
        check_options(
            num_classes=num_classes,
            in_channels=in_channels,
            dropout=dropout,
            aux_dropout=aux_dropout,
        )
        if not aux_logits and aux_dropout != AUX_DROPOUT:
            raise OptionError(
                f"aux_dropout={aux_dropout} has no effect with aux_logits=False; drop one of them"
            )
        super().__init__()

        def inception(*channels: int) -> Inception:
            return Inception(*channels, paper_5x5=paper_5x5)

        # The paper follows the first pool and conv3 with local response normalization; the
        # batch normalization inside every ConvBNReLU takes its place, as in torchvision.
        # Deviation (small_input, cnnlab's, after Inception-v3's Section 9 low-resolution network):
        # conv1 has stride 1 and no max pooling follows it. Identity keeps the module name.
        first_stride = 1 if small_input else 2
        self.conv1 = ConvBNReLU(in_channels, 64, kernel_size=7, stride=first_stride, padding=3)
        self.maxpool1 = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = ConvBNReLU(64, 64, kernel_size=1)
        self.conv3 = ConvBNReLU(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception3a = inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception4a = inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = inception(528, 256, 160, 320, 32, 128, 128)
        # The paper pools 3x3 with stride 2 here; torchvision pools 2x2 (the same 14 -> 7 grid).
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)

        self.inception5a = inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = inception(832, 384, 192, 384, 48, 128, 128)

        self.aux1 = InceptionAux(512, num_classes, aux_dropout) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes, aux_dropout) if aux_logits else None
        # The paper's Table 1 has 40% dropout before the classifier; 0.2 is torchvision's default.
        self.add_head(1024, num_classes, dropout)
        init_truncated_normal(self, std=0.01)

    def forward_trunk(
        self, x: torch.Tensor, with_aux: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        aux_logits = []
        # Grids at 224 x 224; with small_input at 32 x 32 they are 32, 16, 8 where these say
        # 56, 28, 14, and 4 where they say 7.
        x = self.maxpool1(self.conv1(x))  # N x 64 x 56 x 56
        x = self.maxpool2(self.conv3(self.conv2(x)))  # N x 192 x 28 x 28
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # N x 480 x 14 x 14
        x = self.inception4a(x)  # N x 512 x 14 x 14
        if with_aux:
            aux_logits.append(self.aux1(x))
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # N x 528 x 14 x 14
        if with_aux:
            aux_logits.append(self.aux2(x))
        x = self.maxpool4(self.inception4e(x))  # N x 832 x 7 x 7
        x = self.inception5b(self.inception5a(x))  # N x 1024 x 7 x 7
        return x, tuple(aux_logits)


GOOGLENET_OPTIONS = {
    "num_classes": num_classes_option(),
    "in_channels": in_channels_option(),
    "aux_logits": ModelOption(True, "the two auxiliary classifiers (training mode only)"),
    "dropout": dropout_option(0.2),
    "aux_dropout": ModelOption(AUX_DROPOUT, "dropout probability in the auxiliary classifiers"),
    "paper_5x5": ModelOption(
        False, "5x5 convolutions in the 5x5 branches as in the paper (torchvision uses 3x3)"
    ),
    "small_input": ModelOption(
        False, "for 28-32 px images: stride-1 conv1, no first max pool (as Inception-v3's §9)"
    ),
}


@register_model(
    input_size=(3, 224, 224),
    paper="Szegedy et al. 2014, arXiv:1409.4842",
    mean=INCEPTION_MEAN,
    std=INCEPTION_STD,
    options=GOOGLENET_OPTIONS,
)
def googlenet(**options) -> GoogLeNet:
    """GoogLeNet (Inception-v1): nine Inception modules, two auxiliary classifiers."""
    return GoogLeNet(**options)
