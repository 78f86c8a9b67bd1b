"""The small-input forms' shared promises: `small_input=True` trains and evaluates on 28x28
grayscale and 32x32 RGB images (MNIST and CIFAR-10), and is an option that takes 28 px.

Shared by the families whose small form is checked the same way (AlexNet, VGG, NiN, Inception).
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models import check_input_size, create_model, min_input_size, model_info

SMALL_IMAGES = [(1, 28), (3, 32)]  # (channels, side)


def assert_small_input_trains_and_evaluates(name: str, channels: int, side: int) -> None:
    """A training step's loss reaches every parameter; eval mode gives finite logits."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=channels, small_input=True)
    images = torch.randn(2, channels, side, side)
    logits = model.train()(images)
    assert logits.shape == (2, 10)
    nn.functional.cross_entropy(logits, torch.tensor([3, 7])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        logits = model.eval()(images)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def assert_small_input_takes_28_pixel_images(name: str) -> None:
    """`small_input` is an option, off by default, and its form takes 1x28x28 images."""
    assert model_info(name).defaults["small_input"] is False
    assert min_input_size(name, small_input=True) <= 28
    assert min_input_size(name, small_input=True, in_channels=1) <= 28
    check_input_size(name, (1, 28, 28), in_channels=1, small_input=True)
