"""Evaluating a model on a dataset split: loss, top-1/top-5, per-class accuracy, confusion.

`evaluate` accumulates the loss sum, top-k counts and predictions on the device and reads
them back once at the end, so it runs at the speed of the forward passes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlab.data.loader import BatchLoader
from cnnlab.engine.metrics import (
    confusion_matrix,
    per_class_accuracy,
    reported_k,
    topk_correct,
)
from cnnlab.errors import DataError


@dataclass
class EvalResult:
    """Loss and accuracies of a model on one split (accuracies are fractions in [0, 1]).

    `top5` is top-min(5, classes); `top_k` is what to show beside top-1: `(k, accuracy)` with
    k = `reported_k(classes)` (5, or below the class count), None with two classes.
    """

    loss: float
    top1: float
    top5: float
    count: int
    confusion: Tensor
    classes: list[str]
    top_k: tuple[int, float] | None = None

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
            "top_k": None if self.top_k is None else {"k": self.top_k[0], "acc": self.top_k[1]},
            "count": self.count,
            "classes": list(self.classes),
            "per_class_accuracy": self.per_class_accuracy,
            "confusion": self.confusion.tolist(),
        }


def evaluate(
    model: nn.Module,
    loader: BatchLoader,
    classes: list[str],
    *,
    amp: bool = False,
    flip: bool = False,
) -> EvalResult:
    """Mean cross-entropy, top-1/top-5 accuracy and the confusion matrix of `model` on `loader`.

    Runs in eval mode without gradients (the model's mode is restored afterwards); the sums
    stay on the device until the last batch is done, so the loop never waits for the host.
    With `amp`, forward passes run under autocast; with `flip` (test-time flips), the logits are
    the mean of those of each image and of its mirror image. Top-5 means top-min(5, classes).
    """
    device = loader.device
    k = reported_k(len(classes))
    ks = (1, 5, k or 1)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros(len(ks), dtype=torch.int64, device=device)
    predictions: list[Tensor] = []
    targets: list[Tensor] = []
    with inference_mode(model), torch.autocast(device.type, enabled=amp):
        for images, labels in loader:
            logits = model(images).float()
            if flip:
                logits = (logits + model(images.flip(-1)).float()) / 2
            if logits.shape[-1] != len(classes):
                raise DataError(
                    f"the model predicts {logits.shape[-1]} classes but the data has "
                    f"{len(classes)}; evaluate on the dataset the model was trained for"
                )
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            correct += topk_correct(logits, labels, ks=ks)
            predictions.append(logits.argmax(dim=-1))
            targets.append(labels)
    if not targets:
        raise DataError("nothing to evaluate: the split has no images")
    confusion = confusion_matrix(torch.cat(predictions), torch.cat(targets), len(classes))
    count = sum(len(batch) for batch in targets)
    top1, top5, top_k = correct.cpu().tolist()
    return EvalResult(
        loss=loss_sum.item() / count,
        top1=top1 / count,
        top5=top5 / count,
        count=count,
        confusion=confusion.cpu(),
        classes=list(classes),
        top_k=None if k is None else (k, top_k / count),
    )


@contextlib.contextmanager
def inference_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode without autograd; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)
