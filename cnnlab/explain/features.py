"""What a layer sees: the feature maps of one image at a named layer, and the first filters."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from cnnlab.errors import OptionError
from cnnlab.explain.hooks import record_layer, resolve_layer, trace_layers
from cnnlab.explain.methods import eval_mode, unit_range


def feature_maps(model: nn.Module, image: Tensor, layer: str) -> tuple[str, np.ndarray]:
    """The layer's name and its output (C, h, w) for one normalized image (1, C, H, W).

    `layer` is a module name, or "auto" for the last feature block; an unknown name raises
    `OptionError` listing the layers that have feature maps.
    """
    name = resolve_layer(model, layer, trace_layers(model, image))
    with eval_mode(model), torch.no_grad(), record_layer(model, name) as recording:
        model.forward_features(image)
    return name, recording.activation[0].float().cpu().numpy()


def activation_heat(activation: np.ndarray) -> np.ndarray:
    """(h, w) in [0, 1]: a (C, h, w) activation's mean over its channels, scaled from its
    minimum to its maximum (zero where it is constant) — a heat map of where the layer fires."""
    mean = torch.from_numpy(np.ascontiguousarray(activation)).float().mean(dim=0)
    return unit_range(mean[None], signed=True)[0].numpy()


def first_conv_filters(model: nn.Module) -> tuple[str, np.ndarray]:
    """The first convolution's name and weights (out, in, k, k)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module.weight.detach().float().cpu().numpy()
    raise OptionError(f"{type(model).__name__} has no convolution whose filters could be drawn")
