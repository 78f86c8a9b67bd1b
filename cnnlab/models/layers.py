"""Pieces shared by the model families: activation and pooling factories and the classifier API.

`ClassifierNet` gives every network timm's interface: `forward_features` (the convolutional
trunk), `forward_head` (pooling and classifier), `get_classifier` and `reset_classifier`. The
transfer modes and classic CAM rely on it and need no per-model special cases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from cnnlab.errors import OptionError

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

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final layer that maps features to class scores."""
        return self.get_submodule(self.classifier_name)

    @property
    def num_features(self) -> int:
        """Width of the pooled features the classifier takes (timm's `num_features`)."""
        return self._head_layout()[1]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer with a freshly initialized one for `num_classes` classes.

        `num_classes=0` removes it, as timm's does: the network then returns its pooled
        features, `(N, num_features)`; a later call puts a classifier back.
        """
        kind, width, options = self._head_layout()
        self._removed_head = (kind, width, options)  # a plain tuple: not a submodule
        if num_classes == 0:
            new: nn.Module = nn.Identity()
        elif kind == "linear":
            new = nn.Linear(width, num_classes, **options)
        else:
            new = nn.Conv2d(width, num_classes, **options)
        template = next(self.parameters())
        new = new.to(device=template.device, dtype=template.dtype)
        parent_name, _, child_name = self.classifier_name.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self
        setattr(parent, child_name, new)
        self.num_classes = num_classes

    def _head_layout(self) -> tuple[str, int, dict]:
        """The classifier's kind, input width and options (remembered while it is removed)."""
        old = self.get_classifier()
        if isinstance(old, nn.Linear):
            return "linear", old.in_features, {"bias": old.bias is not None}
        if isinstance(old, nn.Conv2d):
            layout = {"kernel_size": old.kernel_size, "stride": old.stride, "padding": old.padding}
            return "conv", old.in_channels, layout
        if isinstance(old, nn.Identity) and hasattr(self, "_removed_head"):
            return self._removed_head
        raise TypeError(f"cannot reset classifier of type {type(old).__name__}")
