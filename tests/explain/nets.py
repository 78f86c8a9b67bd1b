"""Tiny networks for the explanation tests: small enough to check every map by hand."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models.layers import ClassifierNet


class TinyGapNet(ClassifierNet):
    """Two conv-ReLU blocks, global average pooling and one linear layer (CAM applies)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3, width: int = 6) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.block1 = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.fc = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)


class SharedReluNet(ClassifierNet):
    """One ReLU module used after both convolutions: hooks on it would see two outputs."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)


class FlattenHeadNet(ClassifierNet):
    """Conv trunk then a linear layer on the flattened maps: no global pooling, so no CAM."""

    classifier_name = "fc"

    def __init__(self, num_classes: int = 3, side: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4 * side * side, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return x if pre_logits else self.fc(x)


class CroppingNet(TinyGapNet):
    """`TinyGapNet` that looks only at the left `keep` columns of its input."""

    def __init__(self, keep: int, **options: int) -> None:
        super().__init__(**options)
        self.keep = keep

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward_features(x[..., : self.keep])


def randomized_batch_norm(model: nn.Module) -> nn.Module:
    """Give every batch-norm layer non-trivial running statistics and affine parameters."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()
