"""Data-parallel training: two CPU processes under torchrun against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_ranks import IMAGES, WEIGHT_STEPS, weights_config, weights_splits
from synthetic import synthetic_splits, write_image_folder

from cnnlab.engine.checkpoint import model_from_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.runlog import read_metrics
from cnnlab.engine.trainer import train

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


def test_cli_under_torchrun_learns_as_one_process_and_rank_0_alone_writes(tmp_path: Path) -> None:
    """`cnnlab train` under torchrun, end to end (the exact check of the data-parallel steps is
    `test_two_ranks_end_with_the_weights_of_one_process_on_the_whole_batch`)."""
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


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder where two ranks under torchrun left what they trained on and ended with."""
    out = tmp_path_factory.mktemp("ranks")
    script = Path(__file__).with_name("ddp_ranks.py")
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, *torchrun, str(script), str(out)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def test_ranks_take_disjoint_shards_covering_the_training_set_each_epoch(ranks: Path) -> None:
    """Two ranks under torchrun: each epoch, their images are disjoint and together all of them."""
    shards = [json.loads((ranks / f"shards-rank{r}.json").read_text()) for r in (0, 1)]
    assert set(shards[0]) == set(shards[1]) == {"0", "1"}
    for epoch in ("0", "1"):
        first, second = (rank[epoch] for rank in shards)
        assert len(first) == len(set(first)) and len(second) == len(set(second))
        assert not set(first) & set(second), f"epoch {epoch}: an image went to both ranks"
        assert sorted(first + second) == list(range(IMAGES)), f"epoch {epoch}: not every image"
    assert shards[0]["0"] != shards[0]["1"]  # reshuffled between epochs


def test_two_ranks_end_with_the_weights_of_one_process_on_the_whole_batch(
    ranks: Path, tmp_path: Path
) -> None:
    """Each rank takes half of every batch; only the all-reduce of the gradients makes their
    steps the one-process step, so without it the weights part after the first step."""
    one = train(weights_config(tmp_path / "one"), data=weights_splits(), progress=False)
    assert len(one.history) == WEIGHT_STEPS  # one full-batch step per epoch
    expected = model_from_checkpoint(one.out_dir / "last.pt")[0].state_dict()
    for rank in (0, 1):
        state = torch.load(ranks / f"weights-rank{rank}.pt", weights_only=True)
        assert state.keys() == expected.keys()
        for name, value in state.items():
            torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6)
