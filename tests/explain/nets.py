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


def left_half_task(count: int, side: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Normalized 1 x side x side noise images; class 1 has a bright 3x3 square in the left
    half, class 0 none. Either class may have a bright bar in the right half, which therefore
    says nothing about the class: class 1 depends only on the left half."""
    images = torch.rand(count, 1, side, side, generator=generator) * 0.3
    labels = torch.arange(count) % 2
    half = side // 2
    for index in range(count):
        if labels[index] == 1:
            row, column = torch.randint(0, side - 3, (2,), generator=generator).tolist()
            column %= half - 3
            images[index, 0, row : row + 3, column : column + 3] = 1
        if torch.rand(1, generator=generator).item() < 0.5:
            row, column = torch.randint(0, side - 6, (2,), generator=generator).tolist()
            images[index, 0, row : row + 6, half + column % half] = 1
    return (images - 0.3) / 0.3, labels


def train_left_half_net(side: int = 16, steps: int = 150) -> tuple[TinyGapNet, torch.Tensor]:
    """A `TinyGapNet` trained on `left_half_task` (seconds on one CPU thread), and held-out
    class-1 images it classifies correctly."""
    generator = torch.Generator().manual_seed(0)
    images, labels = left_half_task(512, side, generator)
    torch.manual_seed(0)
    model = TinyGapNet(num_classes=2, width=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        batch = torch.randint(0, len(images), (64,), generator=generator)
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test_images, test_labels = left_half_task(64, side, generator)
    with torch.no_grad():
        correct = model(test_images).argmax(dim=1) == test_labels
    assert correct.float().mean() > 0.95, "the left-half task did not train"
    return model, test_images[(test_labels == 1) & correct]
