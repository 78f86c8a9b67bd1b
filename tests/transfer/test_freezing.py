"""Transfer freezing end to end on generated data: what each mode trains and what it leaves
bit-identical to the source (weights and frozen batch-norm statistics), also across a resume
through `cnnlab.train(config, resume=RUN)`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import cnnlab
from cnnlab.cli import app
from cnnlab.data.memory import DataSplits, TensorDataset
from cnnlab.engine.checkpoint import model_from_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.hooks import TrainHook
from cnnlab.engine.runlog import read_metrics
from cnnlab.engine.trainer import train
from cnnlab.transfer import TransferHook, TransferSpec, resume_hook, transfer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from synthetic import synthetic_splits, write_image_folder  # noqa: E402

# tiny_cnn's stages: stem (conv, BN), stage (conv, BN), fc. `last:1` is the classifier alone.
TRAINED_PREFIXES = {
    "head": ("fc.",),
    "last:1": ("fc.",),
    "last:2": ("stage.", "fc."),
    "full": ("",),
}
COMMON = {"batch_size": 16, "lr": 0.05, "device": "cpu", "progress": False}


def _halves() -> DataSplits:
    """A new two-class task (blob in the top or the bottom half) on other quadrant images."""
    quadrants = synthetic_splits(train=64, test=32, seed=1)
    train_set, test_set = (
        TensorDataset(split.images, split.labels // 2, ["top", "bottom"])
        for split in (quadrants.train, quadrants.test)
    )
    return DataSplits("halves", train_set, test_set, quadrants.mean, quadrants.std)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny_cnn (batch norm in both stages) trained on the four-quadrant task: its last.pt."""
    config = TrainConfig(
        model="tiny_cnn", epochs=1, batch_size=32, device="cpu",
        out=str(tmp_path_factory.mktemp("source")),
    )  # fmt: skip
    run = train(config, data=synthetic_splits(train=128, test=32), progress=False)
    return run.out_dir / "last.pt"


class StartingPoint(TrainHook):
    """The model as the transfer hook leaves it: its tensors and which parameters train."""

    def on_model_built(self, trainer) -> None:
        model = trainer.model
        self.state = {name: value.clone() for name, value in model.state_dict().items()}
        self.trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        self.hooks = list(trainer.hooks)


def _state(checkpoint: Path) -> dict[str, torch.Tensor]:
    return model_from_checkpoint(checkpoint)[0].state_dict()


@pytest.mark.parametrize("mode", sorted(TRAINED_PREFIXES))
def test_each_mode_trains_its_stages_and_leaves_the_rest_bit_identical(
    mode: str, source: Path, tmp_path: Path
) -> None:
    start = StartingPoint()
    result = transfer(
        source, mode=mode, splits=_halves(), epochs=2, hooks=[start], out=str(tmp_path), **COMMON
    )
    trained = TRAINED_PREFIXES[mode]
    before, after = _state(source), _state(result.out_dir / "last.pt")
    parameters = {name for name, _ in model_from_checkpoint(source)[0].named_parameters()}
    assert start.trainable == {name for name in parameters if name.startswith(trained)}
    assert after.keys() == before.keys()
    for name, value in after.items():
        if name.startswith("fc."):  # the new two-class classifier
            assert value.shape[0] == 2 and not torch.equal(value, start.state[name]), name
            continue
        assert torch.equal(start.state[name], before[name]), f"{name} was not loaded"
        if not name.startswith(trained):  # frozen: weights and batch-norm statistics alike
            assert torch.equal(value, before[name]), f"{name} changed although frozen"
        elif name.endswith((".weight", "running_mean", "running_var")):
            # (a convolution's bias before batch norm gets next to no gradient: not checked)
            assert not torch.equal(value, before[name]), f"{name} did not train"


def test_python_resume_of_a_transferred_run_keeps_the_backbone_frozen(
    source: Path, tmp_path: Path
) -> None:
    """`cnnlab.train(config, resume=RUN)` finds transfer.yaml and keeps the transfer's freezing."""
    data = _halves()
    run = tmp_path / "run"
    transfer(source, mode="head", splits=data, epochs=1, out=str(run), **COMMON)
    after_one = _state(run / "last.pt")
    config = TrainConfig.from_yaml(run / "config.yaml").replace(epochs=2)
    resumed = cnnlab.train(config, resume=run, data=data, progress=False)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    before, after = _state(source), _state(run / "last.pt")
    assert not torch.equal(after["fc.weight"], after_one["fc.weight"])  # epoch 2 trained
    for name, value in after.items():
        if not name.startswith("fc."):
            assert torch.equal(value, before[name]), f"{name} changed in the resumed epoch"


def test_a_resume_given_the_transfer_hook_does_not_get_a_second(
    source: Path, tmp_path: Path
) -> None:
    """As `cnnlab train --resume` and `cnnlab transfer --resume` pass their own hook."""
    data = _halves()
    run = tmp_path / "run"
    transfer(source, mode="head", splits=data, epochs=1, out=str(run), **COMMON)
    config = TrainConfig.from_yaml(run / "config.yaml").replace(epochs=2)
    start = StartingPoint()
    train(config, resume=run, data=data, progress=False, hooks=[resume_hook(run), start])
    assert [type(hook) for hook in start.hooks] == [TransferHook, StartingPoint]
    start = StartingPoint()
    train(config.replace(epochs=3), resume=run, data=data, progress=False, hooks=[start])
    assert [type(hook) for hook in start.hooks] == [TransferHook, StartingPoint]
    assert start.trainable == {"fc.weight", "fc.bias"}


def test_the_engine_resumes_a_transferred_folder_with_its_hook_in_a_fresh_process(
    tmp_path: Path,
) -> None:
    """A process that imported only the engine (not `cnnlab.transfer`, not `cnnlab`) still
    resumes a folder holding `transfer.yaml` with a `TransferHook`: the plugin is found by name."""
    TransferSpec(source="lenet5", mode="last:1").save(tmp_path)
    check = (
        "import sys; from pathlib import Path; from cnnlab.engine.trainer import train; "
        "from cnnlab.engine.hooks import resume_hooks; "
        "print('cnnlab.transfer' in sys.modules); "
        "print([(type(h).__name__, h.spec.mode) for h in resume_hooks(Path(sys.argv[1]), [])])"
    )
    command = [sys.executable, "-c", check, str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == ["False", "[('TransferHook', 'last:1')]"]


def test_cli_resumes_of_a_transferred_run_use_one_transfer_hook(
    source: Path, tmp_path: Path
) -> None:
    """`cnnlab train --resume` and `cnnlab transfer --resume` pass their hook: `train` adds none."""
    folder = write_image_folder(_halves(), tmp_path / "images")
    run = tmp_path / "run"
    common = ["--device", "cpu", "--batch-size", "16"]
    arguments = ["transfer", "--from", str(source), "--data", f"folder:{folder}", "--out", str(run)]
    result = CliRunner().invoke(app, [*arguments, "--epochs", "1", *common])
    assert result.exit_code == 0, result.output
    for epochs, command in ((2, "train"), (3, "transfer")):
        resumed = [command, "--resume", str(run), "--epochs", str(epochs), *common]
        result = CliRunner().invoke(app, resumed)
        assert result.exit_code == 0, result.output
        assert result.output.count("transfer (head):") == 1, result.output
    assert [row["epoch"] for row in read_metrics(run)] == [1, 2, 3]
