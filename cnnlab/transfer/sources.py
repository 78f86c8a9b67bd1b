"""Where transferred weights come from: a cnnlab checkpoint or run folder, cnnlab's built-in
weights (`resnet20.cifar10`), or torchvision's weights (`resnet18.IMAGENET1K_V1`).

Every source becomes a `SourceWeights`: the model to build (a cnnlab model name and options),
its state dict, and the input it was trained on (size, channels, normalization). torchvision's
weights are read from the local torch hub cache only, never downloaded: cnnlab's ImageNet
networks keep torchvision's module names, so their state dicts load as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor

from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.errors import CheckpointError, OptionError, UnknownNameError
from cnnlab.models import list_models
from cnnlab.weights import BUILTIN_WEIGHTS, load_builtin_weights

# torchvision builds these with `transform_input=True` when given weights: the network turns
# ImageNet-normalized input back into (x - 0.5) / 0.5, which is what normalizing with 0.5 gives.
_HALF_NORMALIZED = ("googlenet", "inception_v3")


@dataclass
class SourceWeights:
    """Trained weights to start from, and what they were trained on."""

    source: str
    kind: str  # "checkpoint", "builtin" or "torchvision"
    model_name: str
    model_options: dict
    state: dict[str, Tensor]
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def describe(self) -> str:
        shape = "x".join(map(str, self.image_shape))
        return f"{self.model_name} weights from {self.source} ({self.kind}, trained at {shape})"


def resolve_source(source: str | Path) -> SourceWeights:
    """The weights `source` names: an existing file or run folder, a built-in weights name, or
    a torchvision weights name `<model>.<WEIGHTS>`; anything else is one clear error."""
    text = str(source)
    if Path(text).exists():
        return _from_checkpoint(text, load_checkpoint(text), "checkpoint")
    if text in BUILTIN_WEIGHTS:
        return _from_checkpoint(text, load_builtin_weights(text), "builtin")
    model, _, tag = text.partition(".")
    if tag and model in torchvision.models.list_models(module=torchvision.models):
        return _from_torchvision(model, tag)
    raise OptionError(
        f"unknown transfer source '{text}': not a checkpoint file or run folder, not a built-in "
        f"weights name ({', '.join(BUILTIN_WEIGHTS) or 'none shipped'}), not a torchvision "
        "weights name such as resnet18.IMAGENET1K_V1"
    )


def _from_checkpoint(source: str, state: dict, kind: str) -> SourceWeights:
    name = state["model_name"]
    if name not in list_models():
        raise CheckpointError(
            f"{source}: checkpoint of an unknown model '{name}'; this cnnlab has "
            f"{len(list_models())} models (`cnnlab models`)"
        )
    channels, height, width = (int(side) for side in state["image_shape"])
    return SourceWeights(
        source=source,
        kind=kind,
        model_name=name,
        model_options=dict(state["model_options"]),
        state=state["model_state"],
        image_shape=(channels, height, width),
        mean=tuple(state["mean"]),
        std=tuple(state["std"]),
    )


def torchvision_weights_file(model: str, tag: str) -> tuple[object, Path]:
    """torchvision's weights enum entry for `<model>.<tag>` and its file in the hub cache."""
    entries = torchvision.models.get_model_weights(model)
    if tag not in entries.__members__:
        raise UnknownNameError(f"torchvision weights name for {model}", tag, entries.__members__)
    weights = entries[tag]
    file_name = Path(urlparse(weights.url).path).name
    return weights, Path(torch.hub.get_dir()) / "checkpoints" / file_name


def _from_torchvision(model: str, tag: str) -> SourceWeights:
    weights, file = torchvision_weights_file(model, tag)
    name = f"{model}.{tag}"
    if model not in list_models():
        raise OptionError(f"torchvision's {model} has no cnnlab counterpart to load {name} into")
    if not file.is_file():
        raise CheckpointError(
            f"torchvision weights {name} are not in the local cache (cnnlab never downloads): "
            f"put {file.name} in {file.parent}"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: report it, whatever torch says
        raise CheckpointError(f"{file}: not a readable state dict ({error})") from None
    transforms = weights.transforms()
    side = int(transforms.crop_size[0])
    if model in _HALF_NORMALIZED:
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    else:
        mean, std = tuple(transforms.mean), tuple(transforms.std)
    return SourceWeights(
        source=name,
        kind="torchvision",
        model_name=model,
        model_options={"num_classes": len(weights.meta["categories"]), "in_channels": 3},
        state=state,
        image_shape=(3, side, side),
        mean=mean,
        std=std,
    )
