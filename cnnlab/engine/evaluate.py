"""Evaluating a model on a dataset split, and classifying image files with a trained model.

`evaluate` accumulates the loss sum, top-k counts and predictions on the device and reads
them back once at the end, so it runs at the speed of the forward passes. `predict_files`
decodes files with the same reader and normalization as training, so a file gets the same
preprocessing as the images the model was trained on.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlab.data.images import IMAGE_SUFFIXES, read_image
from cnnlab.data.memory import BatchLoader, TensorDataset
from cnnlab.engine.metrics import confusion_matrix, per_class_accuracy, topk_correct
from cnnlab.errors import DataError, OptionError


@dataclass
class EvalResult:
    """Loss and accuracies of a model on one split (accuracies are fractions in [0, 1])."""

    loss: float
    top1: float
    top5: float
    count: int
    confusion: Tensor
    classes: list[str]

    @property
    def top1_error(self) -> float:
        return 1.0 - self.top1

    @property
    def top5_error(self) -> float:
        return 1.0 - self.top5

    @property
    def per_class_accuracy(self) -> dict[str, float | None]:
        """Accuracy on each true class; None for a class with no images in the split."""
        accuracies = per_class_accuracy(self.confusion).tolist()
        return {
            name: None if math.isnan(value) else value
            for name, value in zip(self.classes, accuracies, strict=True)
        }

    def to_dict(self) -> dict:
        """Plain values only (JSON-ready), the confusion matrix as nested lists."""
        return {
            "loss": self.loss,
            "top1": self.top1,
            "top5": self.top5,
            "top1_error": self.top1_error,
            "top5_error": self.top5_error,
            "count": self.count,
            "classes": list(self.classes),
            "per_class_accuracy": self.per_class_accuracy,
            "confusion": self.confusion.tolist(),
        }


def evaluate(
    model: nn.Module, loader: BatchLoader, classes: list[str], *, amp: bool = False
) -> EvalResult:
    """Mean cross-entropy, top-1/top-5 accuracy and the confusion matrix of `model` on `loader`.

    Runs in eval mode without gradients (the model's mode is restored afterwards); the sums
    stay on the device until the last batch is done, so the loop never waits for the host.
    With `amp`, forward passes run under autocast. Top-5 means top-min(5, number of classes).
    """
    device = loader.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros(2, dtype=torch.int64, device=device)
    predictions: list[Tensor] = []
    targets: list[Tensor] = []
    with _inference(model), torch.autocast(device.type, enabled=amp):
        for images, labels in loader:
            logits = model(images).float()
            if logits.shape[-1] != len(classes):
                raise DataError(
                    f"the model predicts {logits.shape[-1]} classes but the data has "
                    f"{len(classes)}; evaluate on the dataset the model was trained for"
                )
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            correct += topk_correct(logits, labels, ks=(1, 5))
            predictions.append(logits.argmax(dim=-1))
            targets.append(labels)
    if not targets:
        raise DataError("nothing to evaluate: the split has no images")
    confusion = confusion_matrix(torch.cat(predictions), torch.cat(targets), len(classes))
    count = sum(len(batch) for batch in targets)
    top1, top5 = correct.cpu().tolist()
    return EvalResult(
        loss=loss_sum.item() / count,
        top1=top1 / count,
        top5=top5 / count,
        count=count,
        confusion=confusion.cpu(),
        classes=list(classes),
    )


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
) -> list[FilePrediction]:
    """The `topk` most probable classes of each image file (folders expand to their images).

    Files are decoded to `image_shape` (C, H, W; square) and normalized with `mean`/`std`. A
    file that cannot be read gets a `FilePrediction` with `error` set; the others go on.
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
    """Fill `predictions` with the top classes of `images` (one each, in the same order)."""
    batch = TensorDataset(torch.stack(images), torch.zeros(len(images), dtype=torch.long), classes)
    loader = BatchLoader(batch, len(images), mean=tuple(mean), std=tuple(std), device=device)
    normalized, _ = next(iter(loader))
    with _inference(model):
        probabilities = model(normalized).float().softmax(dim=-1)
    top = probabilities.topk(min(topk, probabilities.shape[-1]), dim=-1)
    rows = zip(top.values.tolist(), top.indices.tolist(), strict=True)
    for prediction, (values, indices) in zip(predictions, rows, strict=True):
        prediction.classes = [classes[index] for index in indices]
        prediction.probabilities = values


@contextlib.contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode without autograd; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)
