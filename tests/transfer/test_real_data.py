"""Transfer on real data: LeNet-5 trained on MNIST digits 0-4, transferred to 50 images of the
held-out digits 5-9. Each mode trains exactly what it should, and transfer beats training
from scratch over several seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab.data import load_dataset
from cnnlab.data.memory import DataSplits, TensorDataset
from cnnlab.engine.checkpoint import model_from_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.trainer import train
from cnnlab.transfer import transfer

pytestmark = pytest.mark.slow
SOURCE_DIGITS, TARGET_DIGITS = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
SEEDS = (0, 1, 2)
COMMON = {"epochs": 8, "batch_size": 32, "lr": 0.05, "device": "cpu"}


def _digits(split: TensorDataset, digits: tuple[int, ...], count: int, seed: int) -> TensorDataset:
    """`count` images of `digits` drawn with `seed`, relabelled 0..len(digits)-1."""
    chosen = torch.cat([torch.nonzero(split.labels == digit).flatten() for digit in digits])
    chosen = chosen[torch.randperm(len(chosen), generator=torch.Generator().manual_seed(seed))]
    subset = split.subset(chosen[:count])
    relabel = torch.zeros(10, dtype=torch.long)
    relabel[list(digits)] = torch.arange(len(digits))
    return TensorDataset(subset.images, relabel[subset.labels], [str(d) for d in digits])


def _splits(mnist: DataSplits, digits: tuple[int, ...], train_count: int, seed: int) -> DataSplits:
    train_set = _digits(mnist.train, digits, train_count, seed)
    test_set = _digits(mnist.test, digits, 500, 0)
    pixels = train_set.images.float() / 255
    return DataSplits(
        "mnist-digits", train_set, test_set, (pixels.mean().item(),), (pixels.std().item(),)
    )


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The source run, then per seed: each transfer mode and a from-scratch run."""
    root = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"
    if not root.is_dir():
        pytest.skip(f"MNIST not found at {root.resolve()}")
    mnist = load_dataset(f"mnist:{root}")
    folder = tmp_path_factory.mktemp("transfer")
    source = train(
        TrainConfig(model="lenet5_modern", epochs=2, device="cpu", out=str(folder / "source")),
        data=_splits(mnist, SOURCE_DIGITS, 6000, 0),
        progress=False,
    )
    runs: dict = {"source": source.out_dir / "last.pt", "accuracy": {}}
    for seed in SEEDS:
        target = _splits(mnist, TARGET_DIGITS, 50, seed)
        modes = ("head", "last:2", "full") if seed == 0 else ("head", "full")
        for mode in modes:
            result = transfer(
                runs["source"], mode=mode, splits=target, seed=seed, progress=False,
                out=str(folder / f"{mode.replace(':', '')}-{seed}"), **COMMON,
            )  # fmt: skip
            runs[mode, seed] = result.out_dir / "last.pt"
            runs["accuracy"][mode, seed] = result.final["test_acc"]
        scratch = TrainConfig(
            model="lenet5_modern", seed=seed, out=str(folder / f"s{seed}"), **COMMON
        )
        runs["accuracy"]["scratch", seed] = train(scratch, data=target, progress=False).final[
            "test_acc"
        ]
    return runs


def _state(checkpoint: Path) -> dict[str, torch.Tensor]:
    return model_from_checkpoint(checkpoint)[0].state_dict()


# Stages of lenet5_modern: features.c1, features.c3, classifier.c5, classifier.f6, output.
TRAINED_PREFIXES = {
    "head": ("classifier.output.",),
    "last:2": ("classifier.f6", "classifier.output."),
    "full": ("",),
}


@pytest.mark.parametrize("mode", ["head", "last:2", "full"])
def test_each_mode_trains_exactly_its_stages(experiment: dict, mode: str) -> None:
    before, after = _state(experiment["source"]), _state(experiment[mode, 0])
    for key, tensor in before.items():
        if key.startswith("classifier.output.") or key.endswith("num_batches_tracked"):
            continue  # the new head (another shape) and a counter
        trained = key.startswith(TRAINED_PREFIXES[mode])
        assert torch.equal(tensor, after[key]) != trained, f"{mode}: {key}"
    assert not torch.equal(
        before["classifier.output.weight"][:5], after["classifier.output.weight"]
    )


def test_transfer_beats_training_from_scratch(experiment: dict) -> None:
    accuracy = experiment["accuracy"]

    def mean(kind: str) -> float:
        return sum(accuracy[kind, seed] for seed in SEEDS) / len(SEEDS)

    for mode in ("head", "full"):
        assert all(accuracy[mode, s] > accuracy["scratch", s] for s in SEEDS), accuracy
        assert mean(mode) - mean("scratch") >= 0.08, accuracy
