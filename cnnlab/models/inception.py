"""Inception-v3: Szegedy et al., "Rethinking the Inception Architecture for Computer Vision",
arXiv:1512.00567.

The paper's ideas, and where each lives in this file:

* Batch normalization after every convolution (from Inception-v2/BN-Inception, Ioffe & Szegedy
  2015): `ConvBNReLU`, shared with GoogLeNet.
* Factorizing large convolutions into smaller ones (Section 3.1, Figure 5): a 5x5 becomes two
  stacked 3x3s, the `branch3x3dbl` of `InceptionA` on the 35x35 grid; the stem's 7x7 becomes
  three 3x3s (`Conv2d_1a_3x3` to `Conv2d_2b_3x3`, the "factorized 7x7" of Inception-v3).
* Asymmetric factorization (Section 3.2, Figure 6): an n x n convolution becomes a 1 x n
  followed by an n x 1, with n = 7 on the 17x17 grid: `InceptionC`.
* Expanded filter banks for high-dimensional representations (Figure 7): parallel 1x3 and 3x1
  outputs on the 8x8 grid, `InceptionE`.
* Efficient grid-size reduction (Section 7, Figure 10): stride-2 convolution and pooling
  branches side by side, `InceptionB` (35 -> 17) and `InceptionD` (17 -> 8).
* An auxiliary classifier on the last 17x17 grid, acting as a regularizer (Section 4):
  `InceptionAux`. RMSProp and label smoothing, the rest of "Inception-v3", belong to training.

Module for module this is torchvision's `Inception3`, a port of the released TensorFlow model
whose ImageNet weights load here with a strict `load_state_dict`. That model differs from the
paper's Table 1: after the stem's first pool it has a 1x1 (80), a 3x3 (192) and a max pool where
the table has three 3x3 convolutions, `InceptionA` keeps a 5x5 branch beside its double 3x3, there are four `InceptionC` modules
rather than five, and the auxiliary head's last layer is not batch-normalized. cnnlab follows the
released model. As in `googlenet.py`, torchvision's `transform_input` is left out (cnnlab
normalizes in the data pipeline; the weights expect inputs in [-1, 1], hence mean = std = 0.5).

`small_input=True` is the paper's network for low-resolution input (Section 9): the first
convolution has stride 1 and the max pool after it is gone, so a 79x79 input reaches the same
17x17 and 8x8 grids as a 299x299 one, and 28x28 or 32x32 images pass through. Its parameters
and state_dict are the default network's, so the same weights load.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cnnlab.models.googlenet import (
    INCEPTION_MEAN,
    INCEPTION_STD,
    ConvBNReLU,
    InceptionNet,
    check_options,
    init_truncated_normal,
)
from cnnlab.models.layers import ClassifierNet
from cnnlab.models.registry import (
    ModelOption,
    dropout_option,
    in_channels_option,
    num_classes_option,
    register_model,
)


class InceptionA(nn.Module):
    """35x35 module (Figure 5): 1x1, 5x5, double 3x3 (a factorized 5x5) and pooling branches."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBNReLU(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = ConvBNReLU(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = ConvBNReLU(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = ConvBNReLU(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = ConvBNReLU(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = ConvBNReLU(96, 96, kernel_size=3, padding=1)
        self.pool = nn.AvgPool2d(kernel_size=3, stride=1, padding=1)
        self.branch_pool = ConvBNReLU(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(self.pool(x))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], dim=1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 (Figure 10): stride-2 convolutions beside a stride-2 pool,
    so the grid shrinks without a representational bottleneck."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBNReLU(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = ConvBNReLU(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = ConvBNReLU(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = ConvBNReLU(96, 96, kernel_size=3, stride=2)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), branch3x3dbl, self.pool(x)], dim=1)


class InceptionC(nn.Module):
    """17x17 module (Figure 6): each 7x7 factorized into a 1x7 and a 7x1 convolution.

    `channels_7x7` is the width inside the factorized branches (128, 160, 160, 192 in turn).
    """

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBNReLU(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = ConvBNReLU(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = ConvBNReLU(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBNReLU(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBNReLU(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = ConvBNReLU(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBNReLU(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBNReLU(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBNReLU(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.pool = nn.AvgPool2d(kernel_size=3, stride=1, padding=1)
        self.branch_pool = ConvBNReLU(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            branch7x7dbl = conv(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_5(branch7x7dbl)
        branch_pool = self.branch_pool(self.pool(x))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8 (Figure 10), with a factorized 7x7 in one branch."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBNReLU(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = ConvBNReLU(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = ConvBNReLU(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = ConvBNReLU(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBNReLU(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBNReLU(192, 192, kernel_size=3, stride=2)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = conv(branch7x7x3)
        return torch.cat([branch3x3, branch7x7x3, self.pool(x)], dim=1)


class InceptionE(nn.Module):
    """8x8 module (Figure 7): filter banks expanded into parallel 1x3 and 3x1 outputs."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBNReLU(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = ConvBNReLU(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = ConvBNReLU(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBNReLU(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBNReLU(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = ConvBNReLU(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = ConvBNReLU(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBNReLU(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.pool = nn.AvgPool2d(kernel_size=3, stride=1, padding=1)
        self.branch_pool = ConvBNReLU(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat(
            [self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1
        )
        branch_pool = self.branch_pool(self.pool(x))
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, branch_pool], dim=1)


class InceptionAux(ClassifierNet):
    """The auxiliary classifier on the last 17x17 grid (Section 4, Figure 8), as the released
    model builds it: 5x5 average pool with stride 3 (17x17 -> 5x5), 1x1 convolution (128), 5x5
    convolution (768), global average pooling, linear classifier."""

    classifier_name = "fc"

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv0 = ConvBNReLU(in_channels, 128, kernel_size=1)
        self.conv1 = ConvBNReLU(128, 768, kernel_size=5)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(768, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # Inputs below 299x299 (79x79 with `small_input`) leave a grid under 17x17, which the
        # paper's fixed pooling would shrink below the 5x5 convolution's kernel; there cnnlab
        # pools adaptively to 5x5 so the head still trains (a deviation; from 17x17 up the
        # result is the paper's and torchvision's).
        if min(x.shape[-2:]) >= 17:
            x = F.avg_pool2d(x, kernel_size=5, stride=3)
        else:
            x = F.adaptive_avg_pool2d(x, (5, 5))
        return self.conv1(self.conv0(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)


class Inception3(InceptionNet):
    """Inception-v3: a stem of plain convolutions and two max pools (299 -> 35), three
    `InceptionA` (35x35), a reduction, four `InceptionC` (17x17), a reduction, two `InceptionE`
    (8x8), global average pooling, dropout and `fc`; one auxiliary classifier on the 17x17 grid.

    Its stride-2 layers do not pad, so inputs below 75x75 (21x21 with `small_input`) make the
    forward pass fail (the reduction blocks run out of pixels) rather than silently produce
    garbage.
    """

    aux_head_names = ("AuxLogits",)
    aux_loss_weight = 0.4  # torchvision's reference recipe; the paper gives no weight

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        aux_logits: bool = True,
        dropout: float = 0.5,
        small_input: bool = False,
    ) -> None:
        check_options(num_classes=num_classes, in_channels=in_channels, dropout=dropout)
        super().__init__()
        # Section 9's network for a 79x79 receptive field: the first layer has stride 1 and no
        # max pooling follows it. Identity keeps the module name (and so every state_dict key).
        first_stride = 1 if small_input else 2
        self.Conv2d_1a_3x3 = ConvBNReLU(in_channels, 32, kernel_size=3, stride=first_stride)
        self.Conv2d_2a_3x3 = ConvBNReLU(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = ConvBNReLU(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = ConvBNReLU(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = ConvBNReLU(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)

        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.AuxLogits = InceptionAux(768, num_classes) if aux_logits else None
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.add_head(2048, num_classes, dropout)

        init_truncated_normal(self, std=0.1)
        # The auxiliary head's last layers start smaller, as in the TensorFlow model and as
        # torchvision intends (its 0.01 for conv1 sits on the wrapper module, which its init loop
        # never sees, so torchvision's conv1 actually starts at 0.1).
        if self.AuxLogits is not None:
            init_truncated_normal(self.AuxLogits.conv1, std=0.01)
            init_truncated_normal(self.AuxLogits.fc, std=0.001)

    def forward_trunk(
        self, x: torch.Tensor, with_aux: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # N x 64 x 147 x 147
        x = self.maxpool1(x)  # N x 64 x 73 x 73 (at 299 x 299)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # N x 192 x 71 x 71
        x = self.maxpool2(x)  # N x 192 x 35 x 35
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # N x 288 x 35 x 35
        x = self.Mixed_6a(x)  # N x 768 x 17 x 17
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # N x 768 x 17 x 17
        aux_logits = (self.AuxLogits(x),) if with_aux else ()
        x = self.Mixed_7a(x)  # N x 1280 x 8 x 8
        x = self.Mixed_7c(self.Mixed_7b(x))  # N x 2048 x 8 x 8
        return x, aux_logits


INCEPTION_V3_OPTIONS = {
    "num_classes": num_classes_option(),
    "in_channels": in_channels_option(),
    "aux_logits": ModelOption(True, "the auxiliary classifier (training mode only)"),
    "dropout": dropout_option(0.5),
    "small_input": ModelOption(
        False, "the paper's low-resolution network: stride-1 first layer, no first max pool"
    ),
}


@register_model(
    input_size=(3, 299, 299),
    paper="Szegedy et al. 2015, arXiv:1512.00567",
    mean=INCEPTION_MEAN,
    std=INCEPTION_STD,
    options=INCEPTION_V3_OPTIONS,
)
def inception_v3(**options) -> Inception3:
    """Inception-v3: factorized convolutions, grid-size reductions, one auxiliary classifier."""
    return Inception3(**options)
