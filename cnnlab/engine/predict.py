"""Classifying image files with a trained model: `predict_files`.

Files are decoded with the same reader and normalization as training, so a file gets the same
preprocessing as the images the model was trained on. Folders expand to the images inside them.
The model is a PyTorch network or anything called like one, such as an exported ONNX model
(`cnnlab.deploy.export.OnnxModel`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from cnnlab.data.images import IMAGE_SUFFIXES, read_image
from cnnlab.data.loader import BatchLoader
from cnnlab.data.memory import TensorDataset
from cnnlab.engine.evaluate import inference_mode
from cnnlab.errors import DataError, OptionError


@dataclass
class FilePrediction:
    """The top classes of one file, best first, or why the file could not be classified."""

    path: Path
    classes: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        """`{"path", "top": [{"class", "probability"}, ...]}`, or `{"path", "error"}`."""
        if self.error is not None:
            return {"path": str(self.path), "error": self.error}
        top = [
            {"class": name, "probability": probability}
            for name, probability in zip(self.classes, self.probabilities, strict=True)
        ]
        return {"path": str(self.path), "top": top}


def expand_image_paths(paths: Sequence[str | Path]) -> list[tuple[Path, str | None]]:
    """Each path with None, folders replaced by the images inside them (recursively, sorted).

    A missing path, or a folder without images, comes back with the reason instead of None.
    """
    expanded: list[tuple[Path, str | None]] = []
    for path in map(Path, paths):
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if _is_visible_image(p, path))
            expanded += [(image, None) for image in images]
            if not images:
                expanded.append((path, f"{path}: no images in this folder"))
        elif path.exists():
            expanded.append((path, None))
        else:
            expanded.append((path, f"{path}: no such file"))
    return expanded


def _is_visible_image(path: Path, root: Path) -> bool:
    """An image file not hidden itself nor inside a hidden folder (`.DS_Store`, `._x.jpg`)."""
    hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
    return not hidden and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def predict_files(
    model: nn.Module,
    paths: Sequence[str | Path],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    image_shape: Sequence[int],
    classes: list[str],
    topk: int = 5,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[FilePrediction]:
    """The `topk` most probable classes of each image file (folders expand to their images).

    Files are decoded to `image_shape` (C, H, W; square) and normalized with `mean`/`std`, a
    batch at a time, so memory stays bounded on folders of any size. A file that cannot be read
    gets a `FilePrediction` with `error` set; the others go on. `on_progress(done, total)` is
    called after each batch.
    """
    if topk < 1:
        raise OptionError(f"topk must be at least 1, got {topk}")
    channels, size = int(image_shape[0]), int(image_shape[1])
    entries = expand_image_paths(paths)
    results: list[FilePrediction] = []
    for start in range(0, len(entries), batch_size):
        chunk: list[FilePrediction] = []
        decoded: list[Tensor] = []
        for path, error in entries[start : start + batch_size]:
            if error is None:
                try:
                    decoded.append(read_image(path, channels=channels, size=size))
                except DataError as failure:
                    error = str(failure)
            chunk.append(FilePrediction(path, error=error))
        if decoded:
            readable = [prediction for prediction in chunk if prediction.error is None]
            _classify(model, decoded, readable, mean, std, classes, topk, device)
        results += chunk
        if on_progress is not None:
            on_progress(len(results), len(entries))
    return results


def _classify(
    model: nn.Module,
    images: list[Tensor],
    predictions: list[FilePrediction],
    mean: Sequence[float],
    std: Sequence[float],
    classes: list[str],
    topk: int,
    device: torch.device | str,
) -> None:
    """Fill `predictions` with the top classes of `images` (one each, in the same order).

    A model with `takes_uint8` set (an ONNX export that normalizes inside its graph) is given
    the decoded uint8 images; any other model gets them normalized with `mean`/`std`.
    """
    if getattr(model, "takes_uint8", False):
        inputs = torch.stack(images).to(device)
    else:
        inputs = normalize_images(torch.stack(images), mean, std, device)
    with inference_mode(model):
        probabilities = model(inputs).float().softmax(dim=-1)
    top = probabilities.topk(min(topk, probabilities.shape[-1]), dim=-1)
    rows = zip(top.values.tolist(), top.indices.tolist(), strict=True)
    for prediction, (values, indices) in zip(predictions, rows, strict=True):
        prediction.classes = [classes[index] for index in indices]
        prediction.probabilities = values


def normalize_images(
    images: Tensor, mean: Sequence[float], std: Sequence[float], device: torch.device | str
) -> Tensor:
    """uint8 `(N, C, H, W)` images as model inputs: on `device`, normalized as in training."""
    batch = TensorDataset(images, torch.zeros(len(images), dtype=torch.long), [])
    loader = BatchLoader(batch, len(images), mean=tuple(mean), std=tuple(std), device=device)
    normalized, _ = next(iter(loader))
    return normalized
