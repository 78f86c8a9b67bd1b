"""Fixtures of the explanation tests: one CPU thread, and a network trained on a known task."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from explain_nets import TinyGapNet, randomized_batch_norm, train_left_half_net


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Tiny networks run fastest on one thread; several would fight over the shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="session")
def left_half_net() -> tuple[TinyGapNet, torch.Tensor]:
    """A network whose class 1 depends only on the left half, and class-1 test images."""
    with single_thread():
        return train_left_half_net()


@pytest.fixture
def net() -> TinyGapNet:
    """A small global-average-pooling network with non-trivial batch-norm statistics."""
    return randomized_batch_norm(TinyGapNet())


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 1, 10, 10)
