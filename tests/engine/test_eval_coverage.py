"""Evaluation scores every test image: any batch size, any number of processes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.data.loader import BatchLoader
from cnnlab.data.memory import TensorDataset
from cnnlab.engine.evaluate import evaluate

COUNT = 53  # a prime: no batch size or process count divides it


@pytest.fixture
def dataset() -> TensorDataset:
    images = torch.arange(COUNT, dtype=torch.uint8).view(COUNT, 1, 1, 1).expand(-1, 1, 2, 2)
    return TensorDataset(images.contiguous(), torch.arange(COUNT) % 3, ["a", "b", "c"])


@pytest.mark.parametrize("batch_size", [1, 4, 16, 52, 53, 64])
def test_every_test_image_is_scored_whatever_the_batch_size(dataset, batch_size: int) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    loader = BatchLoader(dataset, batch_size, mean=(0.0,), std=(1.0,))
    assert evaluate(model, loader, dataset.classes).count == COUNT


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_evaluation_shards_cover_the_test_split_once(dataset, world_size: int) -> None:
    """Without even shards (as the trainer's test loader), the ranks split every image."""
    seen = []
    for rank in range(world_size):
        loader = BatchLoader(
            dataset, 8, mean=(0.0,), std=(1.0,), shard=(rank, world_size), even_shards=False
        )
        seen += [
            int(v) for images, _ in loader for v in (255 * images[:, 0, 0, 0]).round().tolist()
        ]
    assert sorted(seen) == list(range(COUNT))
