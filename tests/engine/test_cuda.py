"""The GPU fast path (skipped without CUDA): training, bf16 AMP, channels-last, streaming from
pinned host memory, and resume restoring the random state from the CPU copy in the checkpoint.

cudnn.benchmark is on for CUDA runs, so a resumed run equals an uninterrupted one only up to
the floating-point order of the algorithms cuDNN picks: the weights are compared with a
tolerance here, and exactly on the CPU (tests/engine/test_resume.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from synthetic import synthetic_splits

from cnnlab.data.loader import BatchLoader, dataset_bytes, fits_on_device
from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.distributed import DistributedContext
from cnnlab.engine.trainer import Trainer, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

DATA = synthetic_splits(train=512, test=128)


class Killed(Exception):
    pass


def _config(out: Path, **changes: object) -> TrainConfig:
    values = {
        "model": "tiny_cnn",
        "data": "quadrants",
        "epochs": 4,
        "batch_size": 64,
        "lr": 0.1,
        "augment": ["flip", "crop:2"],
        "device": "cuda",
        "out": str(out),
    }
    return TrainConfig.from_dict({**values, **changes})


@pytest.mark.parametrize(
    "changes",
    [{}, {"amp": True}, {"channels_last": True}, {"amp": True, "channels_last": True}],
    ids=["fp32", "amp", "channels-last", "amp+channels-last"],
)
def test_training_on_cuda_learns(tmp_path: Path, changes: dict) -> None:
    result = train(_config(tmp_path, **changes), data=DATA, progress=False)
    assert result.status == "completed"
    assert result.final["test_acc"] > 0.6  # chance is 0.25
    state = load_checkpoint(result.last_checkpoint)
    assert all(t.device.type == "cpu" for t in state["model_state"].values())


def test_amp_uses_bf16_without_a_loss_scaler_where_the_gpu_has_bf16(tmp_path: Path) -> None:
    trainer = Trainer(
        _config(tmp_path, amp=True),
        DistributedContext.from_environment("cuda"),
        data=DATA,
        progress=False,
    )
    if torch.cuda.is_bf16_supported():
        assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    else:
        assert trainer.amp_dtype == torch.float16 and trainer.scaler.is_enabled()


def test_resident_and_streamed_batches_are_the_same() -> None:
    device = torch.device("cuda")
    assert fits_on_device(dataset_bytes(DATA.train), device)  # a few kilobytes
    assert not fits_on_device(10 * torch.cuda.mem_get_info(device)[1], device)
    common = {"mean": DATA.mean, "std": DATA.std, "device": device, "shuffle": True, "seed": 3}
    resident = BatchLoader(DATA.train, 64, resident=True, **common)
    streamed = BatchLoader(DATA.train, 64, resident=False, **common)
    assert resident.images.is_cuda and not streamed.images.is_cuda
    for (a, la), (b, lb) in zip(resident, streamed, strict=True):
        assert b.is_cuda and lb.is_cuda
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_resume_on_cuda_restores_the_cpu_random_state(tmp_path: Path) -> None:
    straight = train(_config(tmp_path / "straight"), data=DATA, progress=False)

    def kill_after_two(row: dict) -> None:
        if row["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train(_config(tmp_path / "cut"), data=DATA, progress=False, on_epoch_end=kill_after_two)
    saved = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert saved["rng_state"]["cuda"] is None or all(
        state.device.type == "cpu" for state in saved["rng_state"]["cuda"]
    )
    resumed = train(_config(tmp_path / "cut"), data=DATA, progress=False, resume=tmp_path / "cut")
    assert resumed.status == "completed" and len(resumed.history) == 4
    expected = load_checkpoint(straight.last_checkpoint)["model_state"]
    actual = load_checkpoint(resumed.last_checkpoint)["model_state"]
    for name, tensor in expected.items():
        assert torch.allclose(actual[name].float(), tensor.float(), rtol=1e-3, atol=1e-4), name
