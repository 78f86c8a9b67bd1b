"""The fit loop on a tiny learnable task: learning, run-folder files, losses, divergence, CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from synthetic import synthetic_splits, write_image_folder
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.data.loader import BatchLoader
from cnnlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.distributed import DistributedContext, resolve_device
from cnnlab.engine.evaluate import evaluate
from cnnlab.engine.runlog import METRIC_COLUMNS, read_metrics
from cnnlab.engine.trainer import Trainer, train
from cnnlab.errors import OptionError

DATA = synthetic_splits(train=384, test=128)


def _config(tmp_path: Path, **changes: object) -> TrainConfig:
    values = {
        "model": "tiny_cnn",
        "data": "quadrants",
        "epochs": 4,
        "batch_size": 32,
        "lr": 0.1,
        "schedule": "constant",
        "device": "cpu",
        "out": str(tmp_path / "run"),
    }
    return TrainConfig.from_dict({**values, **changes})


def _trainer(config: TrainConfig) -> Trainer:
    return Trainer(config, DistributedContext(torch.device("cpu")), data=DATA, progress=False)


def test_learns_the_task_and_writes_the_run_folder(tmp_path: Path) -> None:
    config = _config(tmp_path)
    result = train(config, data=DATA, progress=False)
    run = tmp_path / "run"
    assert result.status == "completed" and result.out_dir == run
    assert result.final["test_acc"] >= 0.9
    assert [row["status"] for row in result.history] == ["ok", "ok", "ok", "completed"]
    rows = read_metrics(run)
    assert [list(row) for row in rows] == [list(METRIC_COLUMNS)] * 4
    assert [row["test_acc"] for row in rows] == [row["test_acc"] for row in result.history]
    with (run / "metrics.csv").open() as file:
        assert [float(row["train_loss"]) for row in csv.DictReader(file)] == pytest.approx(
            [row["train_loss"] for row in rows]
        )
    assert TrainConfig.from_yaml(run / "config.yaml") == config
    assert (run / "curves.png").read_bytes().startswith(b"\x89PNG")
    last = load_checkpoint(result.last_checkpoint)
    assert last["epoch"] == 4 and last["history"] == result.history
    assert last["classes"] == DATA.classes and last["image_shape"] == [1, 12, 12]


def test_best_checkpoint_holds_the_best_epoch(tmp_path: Path) -> None:
    result = train(_config(tmp_path, lr=0.3, epochs=3), data=DATA, progress=False)
    best_accuracy = max(row["test_acc"] for row in result.history)
    model, state = model_from_checkpoint(result.best_checkpoint)
    assert state["best_metric"] == result.best_metric == best_accuracy
    loader = BatchLoader(DATA.test, 64, mean=tuple(state["mean"]), std=tuple(state["std"]))
    assert evaluate(model, loader, DATA.classes).top1 == best_accuracy


def test_test_time_flips_score_each_epoch_on_the_images_and_their_mirrors(tmp_path: Path) -> None:
    result = train(_config(tmp_path, epochs=1, test_time_flip=True), data=DATA, progress=False)
    model, state = model_from_checkpoint(result.last_checkpoint)
    loader = BatchLoader(DATA.test, 64, mean=tuple(state["mean"]), std=tuple(state["std"]))
    flipped, plain = (
        evaluate(model, loader, DATA.classes, flip=True),
        evaluate(model, loader, DATA.classes),
    )
    assert result.final["test_acc"] == flipped.top1
    assert result.final["test_loss"] == pytest.approx(flipped.loss) != plain.loss


def test_divergence_stops_at_once_and_is_recorded(tmp_path: Path) -> None:
    result = train(_config(tmp_path, lr=1e6), data=DATA, progress=False)
    assert result.status == "diverged" and len(result.history) == 1
    (row,) = read_metrics(tmp_path / "run")
    assert row["status"] == "diverged" and row["test_acc"] != row["test_acc"]  # NaN: not run
    assert result.last_checkpoint is None  # nothing worth resuming was saved


def test_loss_adds_weighted_auxiliary_losses_with_label_smoothing(tmp_path: Path) -> None:
    trainer = _trainer(_config(tmp_path, model="tiny_aux_cnn", label_smoothing=0.1))
    images, labels = next(iter(trainer.train_loader))
    model = trainer.model.train()
    aux_before = model.aux.weight.detach().clone()
    torch.manual_seed(1)  # the same dropout mask in both forward passes
    with torch.no_grad():
        logits, (aux_logits,) = model(images)
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    expected += model.aux_loss_weight * F.cross_entropy(aux_logits, labels, label_smoothing=0.1)
    torch.manual_seed(1)
    loss, step_logits = trainer.train_step(images, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.equal(step_logits, logits)
    assert not torch.equal(model.aux.weight, aux_before)  # the auxiliary head is trained


def test_multi_scale_trains_on_every_listed_side(tmp_path: Path) -> None:
    trainer = _trainer(_config(tmp_path, multi_scale=[8, 12, 16], epochs=1))
    sides = set()
    trainer.model.register_forward_pre_hook(lambda _, args: sides.add(args[0].shape[-1]))
    trainer.train_one_epoch(0)
    assert sides == {8, 12, 16}


def test_multi_scale_is_refused_for_fixed_size_heads(tmp_path: Path) -> None:
    data = synthetic_splits(train=32, test=8, side=28)
    config = _config(tmp_path, model="lenet5", multi_scale=[24, 28])
    with pytest.raises(OptionError, match="'lenet5' has a classifier sized for one input"):
        train(config, data=data, progress=False)


def test_amp_and_channels_last_on_cpu(tmp_path: Path) -> None:
    trainer = _trainer(_config(tmp_path, amp=True, channels_last=True))
    dtypes = set()
    trainer.model.fc.register_forward_hook(lambda *args: dtypes.add(args[2].dtype))
    metrics = trainer.train_one_epoch(0)
    assert dtypes == {torch.bfloat16} and not metrics["diverged"]
    assert trainer.model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_unavailable_device_is_an_option_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert resolve_device("auto") in (torch.device("cpu"), torch.device("mps"))
    with pytest.raises(OptionError, match="device 'cuda' is not available"):
        resolve_device("cuda")


@pytest.fixture
def image_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    return f"folder:{write_image_folder(DATA, tmp_path / 'images')}"


def _cli(*args: str) -> object:
    return CliRunner().invoke(app, ["train", *args], catch_exceptions=False)


def test_cli_trains_with_config_file_and_overrides(tmp_path: Path, image_folder: str) -> None:
    config_file = tmp_path / "recipe.yaml"
    _config(tmp_path, data=image_folder, channels=1, epochs=5).to_yaml(config_file)
    out = tmp_path / "cli-run"
    options = ["--epochs", "2", "--model-opt", "in_channels=1", "--out", str(out), "--quiet"]
    result = _cli("--config", str(config_file), *options)
    assert result.exit_code == 0, result.output
    saved = TrainConfig.from_yaml(out / "config.yaml")
    assert (saved.epochs, saved.data, saved.channels) == (2, image_folder, 1)
    assert saved.model == "tiny_cnn" and saved.model_options == {"in_channels": 1}
    assert len(read_metrics(out)) == 2 and (out / "best.pt").is_file()


def test_cli_divergence_exits_with_code_3(tmp_path: Path, image_folder: str) -> None:
    args = ["--model", "tiny_cnn", "--data", image_folder, "--channels", "1", "--device", "cpu"]
    result = _cli(
        *args, "--lr", "1e6", "--schedule", "constant", "--out", str(tmp_path / "d"), "-q"
    )
    assert result.exit_code == 3
    assert "diverged" in result.output and "Traceback" not in result.output


def test_cli_bad_model_option_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = _cli("--model-opt", "colour=red", "--out", str(tmp_path / "x"), "--data", "nowhere")
    assert result.exit_code == 2
    assert "model 'lenet5_modern' has no option 'colour'" in result.output


def test_given_mean_and_std_feed_raw_pixels_and_are_checkpointed(
    tmp_path: Path, image_folder: str
) -> None:
    out = tmp_path / "raw"
    args = ["--model", "tiny_cnn", "--data", image_folder, "--channels", "1", "--device", "cpu"]
    result = _cli(*args, "--epochs", "1", "--mean", "0", "--std", "1", "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    state = load_checkpoint(out / "last.pt")
    assert (state["mean"], state["std"]) == ([0.0], [1.0])
    assert (state["config"]["mean"], state["config"]["std"]) == ([0.0], [1.0])
    trainer = _trainer(TrainConfig.from_yaml(out / "config.yaml"))
    images, _ = next(iter(trainer.test_loader))
    raw = DATA.test.images[: len(images)].float() / 255
    assert torch.allclose(images, raw, rtol=0, atol=1e-6) and 0 <= images.min() < images.max() <= 1
    default = _trainer(_config(tmp_path))
    assert (default.mean, default.std) == (DATA.mean, DATA.std)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"std": [0.0]}, "std values must be positive"),
        ({"mean": "nan"}, "mean needs finite numbers"),
        ({"mean": [0.5, 0.5]}, "mean has 2 values but the images have 1 channels"),
    ],
)
def test_bad_mean_or_std_is_an_option_error(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        _trainer(_config(tmp_path, **changes))


def test_one_mean_and_std_value_serves_every_channel(tmp_path: Path) -> None:
    rgb = synthetic_splits(train=8, test=4)
    rgb.train.images = rgb.train.images.expand(-1, 3, -1, -1)
    assert _config(tmp_path, mean=0.5, std="0.25").normalization(rgb) == ((0.5,) * 3, (0.25,) * 3)
