"""Parity with torchvision: same module names and shapes, same parameter count, same function.

Shared by the model families that reproduce a torchvision network (AlexNet, VGG).
"""

from __future__ import annotations

import torch
import torchvision

from cnnlab.models import create_model


def assert_matches_torchvision(name: str, input_side: int = 64) -> None:
    """Load torchvision's randomly initialized `name` into cnnlab's and compare eval outputs."""
    reference = getattr(torchvision.models, name)(weights=None).eval()
    reference_state = reference.state_dict()
    with torch.device("meta"):  # the weights come from torchvision; skip initializing our own
        model = create_model(name)

    assert {key: value.shape for key, value in model.state_dict().items()} == {
        key: value.shape for key, value in reference_state.items()
    }
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )

    model = model.to_empty(device="cpu")
    model.load_state_dict(reference_state, strict=True)
    model.eval()
    images = torch.randn(2, 3, input_side, input_side)
    with torch.no_grad():
        expected, actual = reference(images), model(images)
    assert actual.shape == expected.shape
    assert ((actual - expected).abs().max() / expected.abs().max()).item() < 1e-5
