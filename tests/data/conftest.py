"""Fixtures for the data-layer tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty `$CNNLAB_CACHE` for this test alone."""
    path = tmp_path / "cache"
    monkeypatch.setenv("CNNLAB_CACHE", str(path))
    return path
