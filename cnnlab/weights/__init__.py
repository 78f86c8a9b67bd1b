"""Built-in trained weights, shipped as package data: `resnet20.cifar10`, `lenet5_modern.mnist`...

Each file here is a minimal cnnlab checkpoint (`model_name`, `model_options`, `model_state`,
`classes`, `mean`, `std`, `image_shape`) written by `export_weights` from a run of the recipe in
`examples/weights/<name>.yaml`; accuracies, epochs and dates are in `docs/weights.md`. Its
SHA-256 is checked against the table below on every load, so a damaged or swapped file is
refused. Nothing is ever downloaded. This module imports only torch, so the model registry
can use it (`create_model(name, weights=...)`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from cnnlab.errors import CheckpointError, UnknownNameError

# A float32 file at most this large is kept in float32; larger ones are stored in float16.
MAX_FLOAT32_BYTES = 1_900_000


@dataclass(frozen=True)
class BuiltinWeights:
    """One shipped weights file: `name` is `<model>.<dataset>`; accuracy on its test split."""

    name: str
    sha256: str
    test_accuracy: float

    @property
    def model(self) -> str:
        return self.name.partition(".")[0]

    @property
    def tag(self) -> str:
        return self.name.partition(".")[2]

    @property
    def file(self) -> str:
        return f"{self.name}.pt"


BUILTIN_WEIGHTS: dict[str, BuiltinWeights] = {
    weights.name: weights
    for weights in (
        BuiltinWeights(
            "lenet5_modern.mnist",
            "df23c8df4c5d345fd00bbcb4e207be98a024a6e820ec03819b628ddedb72d593",
            test_accuracy=0.9920,
        ),
        BuiltinWeights(
            "lenet5_modern.fashion_mnist",
            "564416fc8ab91210b9e371071efef615c8f5aaa8504e595644051ea59d752336",
            test_accuracy=0.9115,
        ),
        BuiltinWeights(
            "resnet20.cifar10",
            "0d64b57b8be4af9b632df67622e1a9a57e07ae0a8c25db93c5d57074cf9d3f26",
            test_accuracy=0.8375,
        ),
    )
}


def weights_for_model(model: str) -> list[str]:
    """The dataset tags of the built-in weights of `model` (e.g. `["cifar10"]`)."""
    return [weights.tag for weights in BUILTIN_WEIGHTS.values() if weights.model == model]


def load_builtin_weights(name: str) -> dict:
    """The checkpoint dict of built-in weights `name`, its hash checked, tensors in float32."""
    if name not in BUILTIN_WEIGHTS:
        raise UnknownNameError("built-in weights", name, BUILTIN_WEIGHTS)
    entry = BUILTIN_WEIGHTS[name]
    data = resources.files(__name__).joinpath(entry.file).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise CheckpointError(
            f"built-in weights {name} are damaged (SHA-256 {digest[:12]}..., expected "
            f"{entry.sha256[:12]}...); reinstall cnnlab"
        )
    with resources.as_file(resources.files(__name__).joinpath(entry.file)) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state["model_state"] = {
        key: value.float() if value.is_floating_point() else value
        for key, value in state["model_state"].items()
    }
    return state


def export_weights(checkpoint: str | Path, name: str, folder: str | Path | None = None) -> Path:
    """Write the model part of a cnnlab checkpoint (or a run folder's `last.pt`) as built-in
    weights file `<name>.pt` in `folder` (default: this package).

    Float tensors stay float32 when the file fits in `MAX_FLOAT32_BYTES`, else become
    float16. Returns the file's path; add its SHA-256 to `BUILTIN_WEIGHTS`.
    """
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():  # a run folder: its final weights
        checkpoint = checkpoint / "last.pt"
    source = torch.load(checkpoint, map_location="cpu", weights_only=True)
    keys = ("format_version", "model_name", "model_options", "classes", "mean", "std")
    state = {key: source[key] for key in keys}
    state["image_shape"] = list(source["image_shape"])
    model_state = {key: value.clone() for key, value in source["model_state"].items()}
    float_bytes = sum(v.numel() * 4 for v in model_state.values() if v.is_floating_point())
    if float_bytes > MAX_FLOAT32_BYTES:
        model_state = {k: v.half() if v.is_floating_point() else v for k, v in model_state.items()}
    state["model_state"] = model_state
    path = Path(folder or Path(__file__).parent) / f"{name}.pt"
    torch.save(state, path)
    return path
