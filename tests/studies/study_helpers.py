"""A tiny study for the tests: LeNet-5 (3x3 kernels) on 12x12 synthetic quadrant images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
sys.path.insert(0, str(TESTS / "engine"))

from synthetic import synthetic_splits  # noqa: E402

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
torch.set_num_threads(1)
from synthetic import synthetic_splits
from cnnlab.studies import StudySpec, run_study
spec = StudySpec.from_dict(json.loads({spec!r}))
run_study(
    spec, {out!r}, data=synthetic_splits(train=128, test=64), lease_seconds={lease}, threads=1,
    workers={workers},
)
"""


def start_runner(spec: dict, out: Path, lease: float = 2.0, workers: int = 1) -> subprocess.Popen:
    """`run_study` in a child process (its own interpreter), output discarded."""
    code = _CHILD.format(
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
