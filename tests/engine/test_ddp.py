"""Data-parallel training: two CPU processes under torchrun against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic import synthetic_splits, write_image_folder

from cnnlab.engine.config import TrainConfig
from cnnlab.engine.runlog import read_metrics

pytestmark = pytest.mark.slow


def _train(command: list[str], out: Path, data: str, cache: Path) -> subprocess.CompletedProcess:
    options = ["--model", "lenet5_modern", "--data", data, "--channels", "1", "--device", "cpu"]
    options += ["--epochs", "2", "--batch-size", "32", "--out", str(out), "--quiet"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CNNLAB_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, *command, "-m", "cnnlab", "train", *options],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_two_processes_match_one(tmp_path: Path) -> None:
    data = f"folder:{write_image_folder(synthetic_splits(512, 128), tmp_path / 'images')}"
    cache = tmp_path / "cache"
    single = _train([], tmp_path / "single", data, cache)
    assert single.returncode == 0, single.stderr
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    parallel = _train(torchrun, tmp_path / "ddp", data, cache)
    assert parallel.returncode == 0, parallel.stderr
    one, two = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "ddp")
    # Rank 0 alone writes: one row per epoch, not one per process.
    assert [row["epoch"] for row in two] == [1, 2]
    # batch_size is global: each process takes 16 images a step, so the schedule runs alike.
    assert [row["lr"] for row in two] == pytest.approx([row["lr"] for row in one])
    assert one[-1]["test_acc"] >= 0.9 and two[-1]["test_acc"] >= 0.9
    assert abs(one[-1]["test_acc"] - two[-1]["test_acc"]) <= 0.05
    assert TrainConfig.from_yaml(tmp_path / "ddp" / "config.yaml").batch_size == 32
    assert (tmp_path / "ddp" / "best.pt").is_file()


def test_ranks_take_disjoint_shards_covering_the_training_set_each_epoch(tmp_path: Path) -> None:
    """Two ranks under torchrun: each epoch, their images are disjoint and together all of them."""
    script = Path(__file__).with_name("ddp_shards.py")
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, *torchrun, str(script), str(tmp_path)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"shards-rank{r}.json").read_text()) for r in (0, 1)]
    assert set(ranks[0]) == set(ranks[1]) == {"0", "1"}
    for epoch in ("0", "1"):
        first, second = (rank[epoch] for rank in ranks)
        assert len(first) == len(set(first)) and len(second) == len(set(second))
        assert not set(first) & set(second), f"epoch {epoch}: an image went to both ranks"
        assert sorted(first + second) == list(range(96)), f"epoch {epoch}: not every image"
    assert ranks[0]["0"] != ranks[0]["1"]  # reshuffled between epochs
