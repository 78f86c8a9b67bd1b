"""The same-recipe benchmark starts from the reference's weights: `init: xavier_weights`.

`../shared/bench/reference_lenet.py` seeds, builds its `nn.Sequential` LeNet-5 (PyTorch's layer
defaults) and re-draws every weight with Xavier-uniform, keeping the default biases. cnnlab's
`lenet5` (sigmoid, average pooling) under `init: xavier_weights` and the same seed must hold
the very same tensors, both from `init_weights` and from a training run's first model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from cnnlab.data.memory import DataSplits, TensorDataset
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.hooks import TrainHook
from cnnlab.engine.optim import init_weights
from cnnlab.engine.trainer import train
from cnnlab.models import create_model

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "bench" / "reference_lenet.py"
TEXTBOOK = {"activation": "sigmoid", "pooling": "avg", "image_size": 28}


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    if not REFERENCE.is_file():
        pytest.skip(f"reference script not found at {REFERENCE.resolve()}")
    spec = importlib.util.spec_from_file_location("reference_lenet", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_weights(reference: ModuleType, seed: int) -> list[torch.Tensor]:
    """The reference's initial parameters, built exactly as its `main` builds them."""
    torch.manual_seed(seed)
    net = reference.lenet5()
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
    return [p.detach() for p in net.parameters()]


@pytest.mark.parametrize("seed", [0, 3])
def test_xavier_weights_with_a_seed_equals_the_reference_network(reference, seed: int) -> None:
    model = create_model("lenet5", **TEXTBOOK)
    init_weights(model, "xavier_weights", seed=seed)
    ours = [p.detach() for p in model.parameters()]
    theirs = reference_weights(reference, seed)
    assert [p.shape for p in ours] == [p.shape for p in theirs]
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert torch.count_nonzero(ours[1]) == len(ours[1])  # the biases are not zeroed


def test_plain_xavier_differs_from_the_reference_by_its_zero_biases(reference) -> None:
    model = create_model("lenet5", **TEXTBOOK)
    init_weights(model, "xavier", seed=0)
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    assert all(torch.count_nonzero(bias) == 0 for bias in biases)
    assert not torch.equal(biases[0], reference_weights(reference, 0)[1])


class _FirstWeights(TrainHook):
    def on_model_built(self, trainer) -> None:
        self.weights = [p.detach().clone() for p in trainer.model.parameters()]


def test_a_training_run_starts_from_the_reference_weights(reference, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8, generator=generator)
    split = TensorDataset(images, torch.arange(40) % 10, [str(c) for c in range(10)])
    data = DataSplits("random", split, split, (0.0,), (1.0,))
    config = TrainConfig(
        model="lenet5",
        model_options={"activation": "sigmoid", "pooling": "avg"},
        data="random",
        epochs=1,
        batch_size=20,
        optimizer="sgd",
        init="xavier_weights",
        seed=2,
        device="cpu",
        out=str(tmp_path / "run"),
    )
    hook = _FirstWeights()
    torch.manual_seed(123)  # whatever ran before, the seed alone decides the weights
    train(config, data=data, progress=False, hooks=[hook])
    expected = reference_weights(reference, 2)
    assert all(torch.equal(a, b) for a, b in zip(hook.weights, expected, strict=True))
