"""The networks a server holds: loaded once at start, chosen by name, one copy per worker.

Explanations put hooks on a network's modules, and a hook sees every forward pass through that
module, whichever thread runs it. So two requests never share a network object: each worker
thread borrows its own copy (`ServedModel.borrowed`) for the whole request.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import queue
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from cnnlab.deploy.uploads import UploadError, decode_upload
from cnnlab.engine.checkpoint import model_from_checkpoint
from cnnlab.errors import OptionError
from cnnlab.explain import explain

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
HEATMAP_COLORMAP = "jet"


@dataclass
class ServedModel:
    """A checkpoint's network under a name, with what decoding and labelling need."""

    name: str
    model_name: str
    classes: list[str]
    mean: list[float]
    std: list[float]
    image_shape: list[int]
    replicas: queue.SimpleQueue

    @classmethod
    def from_checkpoint(cls, name: str, checkpoint: str | Path, copies: int) -> ServedModel:
        """Load `checkpoint` on the CPU and keep `copies` independent copies of its network."""
        model, state = model_from_checkpoint(checkpoint)
        replicas: queue.SimpleQueue = queue.SimpleQueue()
        replicas.put(model)
        for _ in range(copies - 1):
            replicas.put(copy.deepcopy(model))
        return cls(
            name=name,
            model_name=state["model_name"],
            classes=list(state["classes"]),
            mean=list(state["mean"]),
            std=list(state["std"]),
            image_shape=list(state["image_shape"]),
            replicas=replicas,
        )

    def describe(self) -> dict:
        """The model as `GET /api/models` lists it."""
        return {
            "name": self.name,
            "model": self.model_name,
            "classes": self.classes,
            "input_shape": self.image_shape,
        }

    @contextlib.contextmanager
    def borrowed(self) -> Iterator[nn.Module]:
        """A copy of the network no other thread uses until it is given back."""
        model = self.replicas.get()
        try:
            yield model
        finally:
            self.replicas.put(model)

    def decode(self, data: bytes) -> Tensor:
        """The upload as the normalized (1, C, H, W) batch the network takes."""
        channels, size = self.image_shape[0], self.image_shape[1]
        image = decode_upload(data, channels=channels, size=size)
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return ((image / 255.0 - mean) / std)[None]

    def predict(self, data: bytes, topk: int) -> dict:
        """`{"model", "top": [{"class", "probability"}, ...]}` for an uploaded image."""
        (answer,) = self.predict_batch([(data, topk)])
        if isinstance(answer, UploadError):
            raise answer
        return answer

    def predict_batch(self, uploads: Sequence[tuple[bytes, int]]) -> list[dict | UploadError]:
        """`predict` of several `(data, topk)` uploads in one forward pass; a refused upload
        gets its `UploadError` in its place and the others go on."""
        decoded: list[Tensor | UploadError] = []
        for data, _ in uploads:
            try:
                decoded.append(self.decode(data))
            except UploadError as error:
                decoded.append(error)
        batch = [item for item in decoded if isinstance(item, Tensor)]
        if not batch:
            return decoded  # type: ignore[return-value]
        with self.borrowed() as model, torch.inference_mode():
            probabilities = iter(model(torch.cat(batch)).float().softmax(dim=-1).numpy())
        return [
            item
            if isinstance(item, UploadError)
            else {"model": self.name, "top": self._top(next(probabilities), topk)}
            for item, (_, topk) in zip(decoded, uploads, strict=True)
        ]

    def explain(self, data: bytes, method: str, topk: int) -> dict:
        """The prediction plus a heat map of where the network looked for its top class."""
        batch = self.decode(data)
        with self.borrowed() as model:
            explanation = explain(model, batch, method=method)
        target = explanation.targets[0]
        return {
            "model": self.name,
            "top": self._top(explanation.probabilities[0], topk),
            "method": explanation.method,
            "layer": explanation.layer,
            "target": self.classes[target],
            "heatmap": heatmap_data_url(explanation.maps[0]),
        }

    def _top(self, probabilities: np.ndarray, topk: int) -> list[dict]:
        order = np.argsort(-probabilities)[: min(topk, len(self.classes))]
        return [
            {"class": self.classes[index], "probability": float(probabilities[index])}
            for index in order
        ]


def heatmap_data_url(heat: np.ndarray) -> str:
    """An (H, W) map in [0, 1] as a coloured PNG `data:` URL, to lay over the image."""
    colours = matplotlib.colormaps[HEATMAP_COLORMAP](np.clip(heat, 0.0, 1.0), bytes=True)
    buffer = io.BytesIO()
    Image.fromarray(colours[..., :3]).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def load_served_models(specs: list[str], copies: int) -> dict[str, ServedModel]:
    """Load `PATH` or `NAME=PATH` checkpoints; a bare path is served under its model's name."""
    served: dict[str, ServedModel] = {}
    for spec in specs:
        name, separator, path = spec.partition("=")
        if not separator:
            name, path = "", spec
        if name and not NAME_PATTERN.fullmatch(name):
            raise OptionError(f"model name '{name}' may hold only letters, digits, '_', '.', '-'")
        if Path(path).suffix.lower() == ".onnx":
            raise OptionError(
                f"{path}: serve takes checkpoints or run folders (explanations need PyTorch)"
            )
        model = ServedModel.from_checkpoint(name, path, copies)
        model.name = name or model.model_name
        if model.name in served:
            raise OptionError(
                f"two checkpoints would both be served as '{model.name}'; name them as NAME=PATH"
            )
        served[model.name] = model
    return served
