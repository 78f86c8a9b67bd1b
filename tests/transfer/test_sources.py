"""Transfer sources and bad input: torchvision weights from a temporary hub folder, built-in
weights and their hash, checkpoints of unknown models, impossible modes; resume of a run."""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.data import load_dataset
from cnnlab.engine.checkpoint import model_from_checkpoint, save_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.hooks import TrainHook
from cnnlab.engine.trainer import train
from cnnlab.errors import CheckpointError, CnnlabError, OptionError
from cnnlab.models import create_model
from cnnlab.transfer import TransferSpec, resolve_source, transfer
from cnnlab.transfer.hook import load_backbone
from cnnlab.weights import BUILTIN_WEIGHTS, BuiltinWeights, load_builtin_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from synthetic import synthetic_splits, write_image_folder  # noqa: E402

RESNET18_FILE = "resnet18-f37072fd.pth"  # the file name in torchvision's IMAGENET1K_V1 url


@pytest.fixture
def hub(tmp_path: Path):
    """A temporary torch hub folder holding an untrained torchvision resnet18's state dict."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / RESNET18_FILE)
    yield reference
    torch.hub.set_dir(previous)


def test_torchvision_weights_load_from_the_hub_cache(hub) -> None:
    weights = resolve_source("resnet18.IMAGENET1K_V1")
    assert weights.image_shape == (3, 224, 224) and weights.mean == (0.485, 0.456, 0.406)
    model = create_model("resnet18", num_classes=5)
    assert load_backbone(model, weights) == []
    assert torch.equal(model.layer3[1].conv2.weight, hub.layer3[1].conv2.weight)
    assert torch.equal(model.bn1.running_var, hub.bn1.running_var)


def test_torchvision_weights_adapt_to_grayscale_with_a_note(hub) -> None:
    model = create_model("resnet18", num_classes=5, in_channels=1)
    notes = load_backbone(model, resolve_source("resnet18.IMAGENET1K_V1"))
    assert len(notes) == 1 and "conv1" in notes[0]
    assert torch.allclose(model.conv1.weight, hub.conv1.weight.sum(dim=1, keepdim=True))


def test_missing_torchvision_file_names_file_and_folder(tmp_path: Path) -> None:
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "empty-hub"))
    try:
        with pytest.raises(
            CheckpointError, match=rf"put {RESNET18_FILE} in .*empty-hub/checkpoints$"
        ):
            resolve_source("resnet18.IMAGENET1K_V1")
    finally:
        torch.hub.set_dir(previous)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("resnet18.IMAGENET9K_V7", "unknown torchvision weights name for resnet18 'IMAGENET9K_V7'"),
        ("resnet20.imagenet", "unknown transfer source 'resnet20.imagenet'"),
        ("no/such/run", "unknown transfer source"),
    ],
)
def test_unknown_sources_are_one_line(source: str, message: str) -> None:
    with pytest.raises(CnnlabError, match=message) as error:
        resolve_source(source)
    assert "\n" not in str(error.value)


def test_checkpoint_of_an_unknown_model(tmp_path: Path) -> None:
    model = create_model("lenet5_modern")
    state = {
        "model_name": "lenet9000", "model_options": {}, "model_state": model.state_dict(),
        "classes": list("0123456789"), "mean": [0.1], "std": [0.3], "image_shape": [1, 28, 28],
    }  # fmt: skip
    save_checkpoint(tmp_path / "foreign.pt", state)
    with pytest.raises(CheckpointError, match="unknown model 'lenet9000'"):
        resolve_source(tmp_path / "foreign.pt")


@pytest.mark.parametrize("mode", ["last:0", "last:x", "middle", "last:"])
def test_bad_modes_are_refused(mode: str) -> None:
    with pytest.raises(OptionError, match="mode must be full, head or last:K"):
        TransferSpec("x", mode)


@pytest.mark.parametrize("name", sorted(BUILTIN_WEIGHTS))
def test_builtin_weights_match_their_hash_and_model(name: str) -> None:
    entry = BUILTIN_WEIGHTS[name]
    model = create_model(entry.model, weights=entry.tag)
    assert model.state_dict().keys() == load_builtin_weights(name)["model_state"].keys()


def test_builtin_weights_refuse_a_conflicting_class_count() -> None:
    if "lenet5_modern.mnist" not in BUILTIN_WEIGHTS:
        pytest.skip("lenet5_modern.mnist is not shipped")
    with pytest.raises(OptionError, match="trained with num_classes=10, not 3"):
        create_model("lenet5_modern", weights="mnist", num_classes=3)


def test_unknown_builtin_weights_list_the_shipped_ones() -> None:
    with pytest.raises(CnnlabError, match="unknown built-in weights 'resnet20.imagenet'"):
        create_model("resnet20", weights="imagenet")


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny lenet5_modern run on synthetic 28x28 images: a checkpoint source."""
    folder = tmp_path_factory.mktemp("source")
    config = TrainConfig(
        model="lenet5_modern", epochs=1, batch_size=32, device="cpu", out=str(folder)
    )
    return train(config, data=synthetic_splits(train=64, test=32, side=28), progress=False).out_dir


def test_last_k_above_the_stage_count_says_how_many(source_run: Path, tmp_path: Path) -> None:
    splits = synthetic_splits(train=64, test=32, side=28)
    with pytest.raises(
        OptionError, match=r"lenet5_modern has: 5 \(features.c1, .*last:1 to last:5"
    ):
        transfer(source_run, mode="last:6", splits=splits, out=str(tmp_path / "t"), progress=False)


def test_a_transferred_run_resumes_exactly(source_run: Path, tmp_path: Path) -> None:
    splits = synthetic_splits(train=64, test=32, side=28)
    options = {"mode": "last:2", "head_hidden": 8, "backbone_lr_scale": 0.5, "splits": splits}
    options |= {"batch_size": 32, "device": "cpu", "progress": False}
    whole = transfer(source_run, epochs=3, out=str(tmp_path / "whole"), **options)
    transfer(source_run, epochs=3, out=str(tmp_path / "parts"), hooks=[StopAfter(2)], **options)
    resumed = transfer(None, resume=tmp_path / "parts", splits=splits, epochs=3, progress=False)
    for key in ("train_loss", "test_loss"):
        assert [row[key] for row in resumed.history] == [row[key] for row in whole.history]
    one, two = _weights(tmp_path / "whole"), _weights(tmp_path / "parts")
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    assert "classifier.output.0.weight" in one  # the hidden-layer head, rebuilt on load


class StopAfter(TrainHook):
    """Ends a run after `epochs` epochs, as an interruption would."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def after_epoch(self, trainer, row: dict) -> bool:
        return row["epoch"] >= self.epochs


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return model_from_checkpoint(run / "last.pt")[0].state_dict()


def test_cli_transfer_errors_are_one_red_line(source_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["transfer", "--from", "resnet20.imagenet", "--data", "mnist-5k"])
    assert result.exit_code == 2 and "unknown transfer source" in result.output
    result = runner.invoke(app, ["transfer", "--data", "mnist-5k"])
    assert result.exit_code == 2 and "--from" in result.output
    result = runner.invoke(app, ["transfer", "--resume", str(source_run)])
    assert result.exit_code == 2 and "not a transferred run" in result.output


def test_damaged_builtin_weights_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = BUILTIN_WEIGHTS["lenet5_modern.mnist"]
    monkeypatch.setitem(BUILTIN_WEIGHTS, entry.name, BuiltinWeights(entry.name, "0" * 64, 0.99))
    with pytest.raises(CheckpointError, match="lenet5_modern.mnist are damaged"):
        create_model("lenet5_modern", weights="mnist")


def test_builtin_mnist_weights_reach_their_recorded_accuracy(shared_data: Path) -> None:
    test = load_dataset(f"mnist:{shared_data / 'mnist'}").test.subset(torch.arange(2000))
    weights = load_builtin_weights("lenet5_modern.mnist")
    model = create_model("lenet5_modern", weights="mnist").eval()
    images = (test.images.float() / 255 - weights["mean"][0]) / weights["std"][0]
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == test.labels).float().mean().item()
    assert accuracy >= BUILTIN_WEIGHTS["lenet5_modern.mnist"].test_accuracy - 0.01


def test_builtin_cifar10_weights_reach_their_recorded_accuracy(
    shared_data: Path, tmp_path: Path
) -> None:
    archive = shared_data / "cifar10" / "cifar10_test_jpg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"CIFAR-10 not found at {archive}")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    images = load_dataset(f"folder:{tmp_path / 'cifar10' / 'test'}", val_fraction=0.2).test
    weights = load_builtin_weights("resnet20.cifar10")
    assert images.classes == weights["classes"]
    model = create_model("resnet20", weights="cifar10").eval()
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (weights["mean"], weights["std"]))
    with torch.no_grad():
        logits = model((images.images.float() / 255 - mean) / std)
    accuracy = (logits.argmax(1) == images.labels).float().mean().item()
    assert accuracy >= BUILTIN_WEIGHTS["resnet20.cifar10"].test_accuracy - 0.02


def test_cli_transfers_builtin_weights_and_evaluates_the_run(tmp_path: Path) -> None:
    folder = write_image_folder(synthetic_splits(train=64, test=32, side=28), tmp_path / "images")
    run = tmp_path / "run"
    arguments = ["--from", "lenet5_modern.mnist", "--data", f"folder:{folder}", "--mode", "last:2"]
    arguments += ["--epochs", "1", "--batch-size", "32", "--device", "cpu", "--out", str(run)]
    result = CliRunner().invoke(app, ["transfer", *arguments])
    assert result.exit_code == 0, result.output
    assert "trainable parameters" in result.output and (run / "transfer.yaml").is_file()
    result = CliRunner().invoke(app, ["eval", str(run), "--data", f"folder:{folder}"])
    assert result.exit_code == 0, result.output


def test_transfer_at_another_size_than_a_fixed_classifier_says_the_cli_fix() -> None:
    arguments = ["--from", "lenet5_modern.mnist", "--data", "mnist-5k", "--image-size", "32"]
    result = CliRunner().invoke(app, ["transfer", *arguments, "--device", "cpu"])
    assert result.exit_code == 2
    assert "sized for 28x28 inputs" in result.stderr and "--image-size 28" in result.stderr
    assert "create_model_for_input" not in result.stderr


def test_transfer_with_test_data_trains_on_every_training_image(tmp_path: Path) -> None:
    folder = write_image_folder(synthetic_splits(train=64, test=32, side=28), tmp_path / "images")
    run = tmp_path / "run"
    arguments = ["--from", "lenet5_modern.mnist", "--data", f"folder:{folder / 'train'}"]
    arguments += ["--test-data", f"folder:{folder / 'test'}", "--epochs", "1"]
    result = CliRunner().invoke(
        app, ["transfer", *arguments, "--batch-size", "32", "--device", "cpu", "--out", str(run)]
    )
    assert result.exit_code == 0, result.output
    assert "64 train (64 per epoch) / 32 test images" in result.output
    assert f"test split: folder:{folder / 'test'}, all of it (32 images); nothing held out" in (
        result.output
    )
    report = CliRunner().invoke(app, ["eval", str(run), "--device", "cpu", "--json"])
    assert report.exit_code == 0, report.output
    assert '"count": 32' in report.stdout
