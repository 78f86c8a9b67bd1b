"""Pieces shared by the model families: activation and pooling factories and the classifier API.

`ClassifierNet` gives every network timm's interface: `forward_features` (the convolutional
trunk), `forward_head` (pooling and classifier), `get_classifier` and `reset_classifier`. The
transfer modes and classic CAM rely on it and need no per-model special cases.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from cnnlab.errors import OptionError
from cnnlab.models.registry import input_size_error

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
}


class AuxOutputs(NamedTuple):
    """What a network with auxiliary classifiers returns in training mode.

    The engine adds `model.aux_loss_weight * cross_entropy(aux)` for each auxiliary output to
    the main loss; in eval mode such networks return plain logits.
    """

    logits: torch.Tensor
    aux_logits: tuple[torch.Tensor, ...]


POOLINGS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (`relu`, `sigmoid`, `tanh`, `leaky_relu`, `gelu`, ...)."""
    if name not in ACTIVATIONS:
        raise OptionError(f"unknown activation '{name}'; choose one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def scaled(channels: int, width: float, multiple: int = 1) -> int:
    """`channels` times the channel multiplier `width`, rounded to a positive `multiple`.

    Exact at `width=1.0`, so the default networks keep the papers' (and torchvision's) sizes.
    """
    if not 0 < width <= 16:
        raise OptionError(f"width is a channel multiplier in (0, 16], got {width}")
    return max(multiple, round(channels * width / multiple) * multiple)


def make_pool(kind: str, kernel_size: int, stride: int | None = None, **options) -> nn.Module:
    """A 2-D pooling layer: `kind` is `max` or `avg`."""
    if kind not in POOLINGS:
        raise OptionError(f"unknown pooling '{kind}'; choose one of: {', '.join(POOLINGS)}")
    return POOLINGS[kind](kernel_size, stride=stride, **options)


class ClassifierNet(nn.Module):
    """Base class of every cnnlab network.

    Subclasses implement `forward_features` and `forward_head` and set `classifier_name` to the
    dotted path of the final layer (a Linear, or for all-convolutional nets a 1x1 Conv2d).
    """

    classifier_name: str = "fc"

    def __call__(self, *args, **kwargs):
        """`nn.Module`'s call; an input the network cannot take raises the registry's one line.

        Costs nothing on success: the size is only examined once a forward pass has failed.
        """
        try:
            return super().__call__(*args, **kwargs)
        except (RuntimeError, ValueError, IndexError) as failure:
            error = input_size_error(self, args[0] if args else None)
            if error is None:
                raise
            raise error from failure

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final layer that maps features to class scores."""
        return self.get_submodule(self.classifier_name)

    def named_stages(self) -> list[tuple[str, nn.Module]]:
        """The network's stages in forward order, the classifier last: what `last:K` unfreezes.

        By default each convolution or linear layer is a stage, together with the batch norms
        that follow it; families with blocks (ResNet, Inception) override this with their blocks.
        Auxiliary classifiers belong to no stage.
        """
        stages: list[tuple[str, list[nn.Module]]] = []
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                stages.append((name, [module]))
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) and stages:
                stages[-1][1].append(module)
        return [(name, _group(modules)) for name, modules in stages]

    def reset_classifier(self, num_classes: int, hidden: int = 0) -> None:
        """Replace the final layer with a freshly initialized one for `num_classes` classes.

        `hidden > 0` puts a hidden layer of that width (with ReLU) before it: the new
        classifier is then a two-layer `nn.Sequential`.
        """
        old = self.get_classifier()
        if isinstance(old, nn.Sequential):  # a head made earlier with `hidden`
            old = old[0]
        bias = old.bias is not None
        if isinstance(old, nn.Linear):
            layer, features = partial(nn.Linear, bias=bias), old.in_features
        elif isinstance(old, nn.Conv2d):
            geometry = {"kernel_size": old.kernel_size, "stride": old.stride, "padding": old.padding}
            layer, features = partial(nn.Conv2d, bias=bias, **geometry), old.in_channels
        else:
            raise TypeError(f"cannot reset classifier of type {type(old).__name__}")
        if hidden > 0:
            new: nn.Module = nn.Sequential(
                layer(features, hidden), nn.ReLU(inplace=True), layer(hidden, num_classes)
            )
        else:
            new = layer(features, num_classes)
        new = new.to(device=old.weight.device, dtype=old.weight.dtype)
        parent_name, _, child_name = self.classifier_name.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self
        setattr(parent, child_name, new)
        self.num_classes = num_classes


def _group(modules: list[nn.Module]) -> nn.Module:
    """One module for a stage made of several (a layer and its batch norm), sharing them."""
    return modules[0] if len(modules) == 1 else nn.ModuleList(modules)
