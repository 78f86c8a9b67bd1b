"""A tiny study for the tests: LeNet-5 (3x3 kernels) on 12x12 synthetic quadrant images."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
sys.path.insert(0, str(TESTS / "engine"))

from synthetic import synthetic_splits  # noqa: E402

from cnnlab.studies.store import StudyStore  # noqa: E402

DATA = synthetic_splits(train=128, test=64)


def tiny_spec(**changes) -> dict:
    """Two epochs of LeNet-5 per run: 3 points x 2 seeds unless changed."""
    spec = {
        "base": {
            "model": "lenet5",
            "data": "quadrants",
            "model_options": {"kernel_size": 3, "activation": "relu", "pooling": "max"},
            "epochs": 2,
            "batch_size": 32,
            "optimizer": "sgd",
            "lr": 0.1,
            "weight_decay": 0.0,
            "schedule": "constant",
            "device": "cpu",
        },
        "factors": {"lr": [0.05, 0.2]},
        "seeds": 2,
    }
    spec.update(changes)
    return spec


# The child process of the kill and concurrency tests: one runner on the synthetic data.
_CHILD = """
import json, sys, torch
sys.path.insert(0, {tests!r})
sys.path.insert(0, {engine!r})
sys.path.insert(0, {studies!r})
torch.set_num_threads(1)
from synthetic import synthetic_splits
from cnnlab.studies import StudySpec, run_study
if {share!r}:
    from study_helpers import claim_only_after_another_runner
    claim_only_after_another_runner()
spec = StudySpec.from_dict(json.loads({spec!r}))
run_study(
    spec, {out!r}, data=synthetic_splits(train=128, test=64), lease_seconds={lease}, threads=1,
    workers={workers},
)
"""


def claim_only_after_another_runner(timeout: float = 180.0) -> None:
    """In a runner's process: after its first claim, claim again only once another runner holds
    or has finished a run, so two runners started together each train at least one run however
    the scheduler orders them (the real `claim` still decides which run)."""
    original = StudyStore.claim
    claimed: list[bool] = []

    def claim(self: StudyStore, worker: str, lease_seconds: float):
        deadline = time.monotonic() + timeout
        while (
            claimed
            and time.monotonic() < deadline
            and not self._query(
                "SELECT 1 FROM runs WHERE worker IS NOT NULL AND worker != ? LIMIT 1", (worker,)
            )
        ):
            time.sleep(0.05)
        record = original(self, worker, lease_seconds)
        claimed.append(record is not None)
        return record

    StudyStore.claim = claim


def start_runner(
    spec: dict, out: Path, lease: float = 2.0, workers: int = 1, share: bool = False
) -> subprocess.Popen:
    """`run_study` in a child process (its own interpreter), output discarded.

    `share`: after its first run the runner waits for another runner to claim one
    (`claim_only_after_another_runner`).
    """
    code = _CHILD.format(
        share=share,
        studies=str(TESTS / "studies"),
        workers=workers,
        tests=str(TESTS),
        engine=str(TESTS / "engine"),
        spec=json.dumps(spec),
        out=str(out),
        lease=lease,
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
