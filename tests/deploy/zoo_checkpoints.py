"""Checkpoints of zoo networks for the deploy tests, with batch-norm statistics that make sense.

A freshly initialized network in eval mode uses running statistics of 0 and 1, and the deep
ones (Inception-v3) then produce logits in the millions. A few forward passes in training mode
over random images give every batch-norm layer the statistics of its real inputs, so the logits
have the scale of a trained network's and a 1e-4 tolerance means what it says.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnnlab.engine.checkpoint import save_checkpoint
from cnnlab.models import create_model, model_info

CLASSES = ["ant", "bee", "wasp"]


def calibrate_batch_norm(model: nn.Module, shape: tuple[int, int, int], passes: int = 3) -> None:
    """Set every BN layer's running statistics from random normalized inputs (in place)."""
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    if not norms:
        return
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the passes
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model(torch.randn(4, *shape))
    model.eval()


def make_checkpoint(path: Path, name: str, size: int, classes: list[str] = CLASSES) -> Path:
    """Save `name` (random weights, calibrated BN) for `size`x`size` inputs as a cnnlab checkpoint."""
    channels = model_info(name).input_size[0]
    options = {"image_size": size} if model_info(name).takes_image_size else {}
    model = create_model(name, num_classes=len(classes), **options)
    calibrate_batch_norm(model, (channels, size, size))
    save_checkpoint(
        path,
        {
            "model_name": model.model_name,
            "model_options": model.model_options,
            "model_state": model.state_dict(),
            "classes": classes,
            "mean": [0.5] * channels,
            "std": [0.25] * channels,
            "image_shape": [channels, size, size],
        },
    )
    return path
