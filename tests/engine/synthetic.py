"""Tiny learnable datasets and networks for the trainer tests (seconds on a CPU).

`synthetic_splits` makes 1x12x12 images whose class is the quadrant holding a bright blob;
`tiny_cnn` (global pooling, BN, dropout), `tiny_aux_cnn` (plus an auxiliary head) and
`tiny_plain_cnn` (neither BN nor dropout) are registered once per process under those names.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import nn

from cnnlab.data.memory import DataSplits, TensorDataset
from cnnlab.models import list_models, register_model
from cnnlab.models.layers import AuxOutputs, ClassifierNet
from cnnlab.models.registry import in_channels_option, num_classes_option

QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")


def _quadrant_images(count: int, side: int, generator: torch.Generator) -> TensorDataset:
    labels = torch.arange(count) % len(QUADRANTS)
    images = torch.randint(0, 60, (count, 1, side, side), generator=generator)
    half = side // 2
    offsets = torch.randint(0, half - 3, (count, 2), generator=generator)
    for index, (label, (dy, dx)) in enumerate(zip(labels.tolist(), offsets.tolist(), strict=True)):
        top = (label // 2) * half + dy
        left = (label % 2) * half + dx
        images[index, :, top : top + 4, left : left + 4] += 180
    return TensorDataset(images.clamp(0, 255).to(torch.uint8), labels, list(QUADRANTS))


def synthetic_splits(
    train: int = 256, test: int = 128, side: int = 12, seed: int = 0
) -> DataSplits:
    """Train/test splits of the quadrant task; a small CNN learns it in a few epochs."""
    generator = torch.Generator().manual_seed(seed)
    train_set = _quadrant_images(train, side, generator)
    test_set = _quadrant_images(test, side, generator)
    mean = train_set.images.float().mean().item() / 255
    std = train_set.images.float().std().item() / 255
    return DataSplits("quadrants", train_set, test_set, (mean,), (std,))


class TinyCNN(ClassifierNet):
    """Two conv-BN-ReLU stages, global average pooling, dropout, a linear classifier.

    `plain` leaves out batch norm and dropout: a step's result then depends on the batch's
    images only, not on how they are split among processes or on random draws.
    """

    def __init__(self, num_classes: int, in_channels: int, aux: bool, plain: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes

        def norm(channels: int) -> nn.Module:
            return nn.Identity() if plain else nn.BatchNorm2d(channels)

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), norm(8), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.stage = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), norm(16), nn.ReLU())
        self.dropout = nn.Identity() if plain else nn.Dropout(0.1)
        self.fc = nn.Linear(16, num_classes)
        self.aux = nn.Linear(8, num_classes) if aux else None
        self.aux_loss_weight = 0.3

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | AuxOutputs:
        stem = self.stem(x)
        logits = self.forward_head(self.stage(stem))
        if self.aux is not None and self.training:
            return AuxOutputs(logits, (self.aux(stem.mean(dim=(2, 3))),))
        return logits


TINY_OPTIONS = {"num_classes": num_classes_option(4), "in_channels": in_channels_option(1)}


def tiny_cnn(**options) -> TinyCNN:
    """A two-stage CNN with global pooling, for tests."""
    return TinyCNN(options["num_classes"], options["in_channels"], aux=False)


def tiny_aux_cnn(**options) -> TinyCNN:
    """`tiny_cnn` with an auxiliary classifier on the first stage, for tests."""
    return TinyCNN(options["num_classes"], options["in_channels"], aux=True)


def tiny_plain_cnn(**options) -> TinyCNN:
    """`tiny_cnn` without batch norm and dropout, for tests."""
    return TinyCNN(options["num_classes"], options["in_channels"], aux=False, plain=True)


for _builder in (tiny_cnn, tiny_aux_cnn, tiny_plain_cnn):
    if _builder.__name__ not in list_models():
        register_model(input_size=(1, 12, 12), paper="test network", options=TINY_OPTIONS)(_builder)


def write_image_folder(splits: DataSplits, root: Path) -> Path:
    """Save `splits` as PNG files in `root/{train,test}/<class>/` (a `folder:` dataset)."""
    for split_name, split in (("train", splits.train), ("test", splits.test)):
        for index, (image, label) in enumerate(zip(split.images, split.labels, strict=True)):
            folder = root / split_name / split.classes[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{index:04d}.png")
    return root
