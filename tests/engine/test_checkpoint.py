"""Checkpoints: round trips, run folders, atomic saves, safe loading and one-line errors."""

from __future__ import annotations

import fractions
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.engine.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from cnnlab.errors import CheckpointError
from cnnlab.models import create_model, register_model
from cnnlab.models.registry import ModelOption, in_channels_option, num_classes_option


@register_model(
    input_size=(1, 8, 8),
    paper="test fixture",
    options={
        "num_classes": num_classes_option(3),
        "in_channels": in_channels_option(1),
        "width": ModelOption(4, "channels of the convolution"),
    },
)
def checkpoint_test_net(**options) -> nn.Module:
    """A convolution, batch norm and a linear head: weights and buffers to round-trip."""
    num_classes, in_channels, width = (options[k] for k in ("num_classes", "in_channels", "width"))
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )


def trained_state(**options: object) -> dict:
    """A checkpoint dict whose batch-norm statistics differ from a fresh model's."""
    torch.manual_seed(0)
    model = create_model("checkpoint_test_net", **options)
    model.train()(torch.randn(16, 1, 8, 8) * 3 + 1)  # moves the running mean/var
    return {
        "model_name": model.model_name,
        "model_options": model.model_options,
        "model_state": model.state_dict(),
        "classes": ["a", "b", "c"],
        "mean": [0.5],
        "std": [0.25],
        "image_shape": [1, 8, 8],
        "epoch": 1,
        "rng_state": {"torch": torch.get_rng_state(), "cuda": None, "python": None},
        "history": [{"epoch": 1, "train_loss": 1.0}],
        "best_metric": 0.5,
    }


def assert_one_line_error(path: Path, *fragments: str) -> None:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    state = trained_state()
    original, _ = model_from_checkpoint(state)
    save_checkpoint(tmp_path / "run" / "last.pt", state)

    model, loaded = model_from_checkpoint(tmp_path / "run" / "last.pt")

    images = torch.randn(5, 1, 8, 8)
    assert not model.training
    assert loaded["format_version"] == FORMAT_VERSION
    assert loaded["classes"] == ["a", "b", "c"]
    assert torch.equal(loaded["rng_state"]["torch"], state["rng_state"]["torch"])
    with torch.no_grad():
        assert torch.equal(model(images), original(images))
    fresh = create_model("checkpoint_test_net").eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(images), model(images))


def test_run_folder_prefers_best_then_last(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "last.pt", {**trained_state(), "epoch": 2})
    assert load_checkpoint(tmp_path)["epoch"] == 2
    save_checkpoint(tmp_path / "best.pt", {**trained_state(), "epoch": 1})
    assert load_checkpoint(tmp_path)["epoch"] == 1


def test_failed_save_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, trained_state())
    before = path.read_bytes()

    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for a lambda
        save_checkpoint(path, {**trained_state(), "unpicklable": lambda: None})

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(path)["epoch"] == 1


def test_arbitrary_python_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({**trained_state(), "payload": fractions.Fraction(1, 3)}, path)
    assert_one_line_error(path, "refused", "fractions.Fraction")


def test_missing_path(tmp_path: Path) -> None:
    assert_one_line_error(tmp_path / "nope.pt", "nope.pt", "no such checkpoint")


def test_folder_without_checkpoints(tmp_path: Path) -> None:
    assert_one_line_error(tmp_path, "best.pt or last.pt")


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, I am a text file\n", b"PK\x03\x04 truncated zip"],
    ids=["empty", "text", "zip-header-only"],
)
def test_non_checkpoint_bytes(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    assert_one_line_error(path, "bad.pt", "not a PyTorch checkpoint")


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, trained_state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_one_line_error(path, "last.pt")


def test_corrupt_payload_inside_a_valid_archive(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, trained_state())
    data = bytearray(path.read_bytes())
    start = data.index(b"data.pkl") + 40  # inside the pickle stream, past its local header
    data[start : start + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    assert_one_line_error(path, "last.pt")


def test_bare_state_dict_is_not_a_cnnlab_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(create_model("checkpoint_test_net").state_dict(), path)
    assert_one_line_error(path, "not a cnnlab checkpoint")


def test_incomplete_and_future_checkpoints(tmp_path: Path) -> None:
    state = trained_state()
    del state["classes"]
    save_checkpoint(tmp_path / "partial.pt", state)
    assert_one_line_error(tmp_path / "partial.pt", "missing classes")

    save_checkpoint(tmp_path / "future.pt", {**trained_state(), "format_version": 99})
    assert_one_line_error(tmp_path / "future.pt", "newer", "upgrade")


def test_weights_that_do_not_fit_the_model(tmp_path: Path) -> None:
    state = {**trained_state(), "model_options": {**trained_state()["model_options"], "width": 8}}
    with pytest.raises(CheckpointError, match="do not fit model 'checkpoint_test_net'") as caught:
        model_from_checkpoint(state)
    assert "\n" not in str(caught.value)


def test_unknown_model_name() -> None:
    with pytest.raises(CheckpointError, match="cannot rebuild.*'no_such_net'"):
        model_from_checkpoint({**trained_state(), "model_name": "no_such_net"})
