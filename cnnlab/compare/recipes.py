"""A training recipe per architecture at the data's resolution.

The papers' recipes assume ImageNet at 224 px; on small images a network needs its small-input
form, and networks without batch norm need a smaller learning rate to train at all:

- Up to 48 px, every model that has a small-input form takes it (`small_input`: the CIFAR
  stem of the ResNets, the CIFAR VGG, AlexNet's 3x3 stride-1 first convolution, NiN's CIFAR-10
  network, Inception-v3's low-resolution stem and GoogLeNet's by analogy); 49-128 px the
  ImageNet ResNets take the cheap stem (3x3 stride 2, no pooling); larger images keep the
  papers' networks.
- Networks with batch norm: SGD with Nesterov momentum at lr 0.1; without: lr 0.01.
- Colour images: flips and random crops padded by an eighth of the side; grey ones: crops only
  (mirrored digits are other digits).
Every recipe uses the one-cycle schedule, weight decay 5e-4 and label smoothing 0.1.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.engine.config import TrainConfig
from cnnlab.models import create_model_for_input, model_info

SMALL_INPUT_MAX = 48
CHEAP_STEM_MAX = 128


def model_options_for(name: str, image_shape: tuple[int, int, int]) -> dict[str, object]:
    """The small-input variant of model `name` for images of `image_shape`, if it has one."""
    defaults = model_info(name).defaults
    side = image_shape[1]
    if "small_input" in defaults and side <= SMALL_INPUT_MAX:
        return {"small_input": True}
    if "stem" in defaults and side <= CHEAP_STEM_MAX:  # the ImageNet ResNets
        return {"stem": "cheap"}
    return {}


def has_batch_norm(
    name: str, image_shape: tuple[int, int, int], num_classes: int, **options: object
) -> bool:
    """Whether the network normalizes its activations (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = create_model_for_input(name, image_shape, num_classes, **options)
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def recipe(
    name: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    num_train: int,
    base: TrainConfig,
) -> TrainConfig:
    """`base` (data, epochs or time budget, seed, device) with model `name`'s recipe.

    A model that cannot take `image_shape` raises `InputSizeError` (with the size it needs).
    """
    channels, side = image_shape[0], image_shape[1]
    crop = f"crop:{max(1, side // 8)}"
    options = model_options_for(name, image_shape)
    return base.replace(
        model=name,
        model_options=options,
        batch_size=128 if num_train >= 2000 else 32,
        optimizer="momentum",
        nesterov=True,
        lr=0.1 if has_batch_norm(name, image_shape, num_classes, **options) else 0.01,
        weight_decay=5e-4,
        schedule="onecycle",
        label_smoothing=0.1,
        augment=["flip", crop] if channels == 3 else [crop],
    )
