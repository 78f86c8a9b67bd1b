"""Fixtures shared by the whole test suite: a fixed seed and the shared real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: several intra-op threads per worker would
    # oversubscribe the cores, and OpenMP's waiting threads then slow small models tenfold.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_and_data_root(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test reads or writes the user's `~/.cache/cnnlab`: one empty cache per test worker."""
    os.environ["CNNLAB_CACHE"] = str(tmp_path_factory.mktemp("cnnlab-cache"))
    os.environ["CNNLAB_DATA"] = str(tmp_path_factory.mktemp("cnnlab-data"))


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Every test starts from the same random state."""
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data` beside the repository; the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA.resolve()}")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """One intra-op thread: timings of tiny steps on a busy 2-core machine stay stable (with two,
    every operator waits for a descheduled thread, and steps vary fifty-fold)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
