"""Classification metrics computed on whole batches on the device.

Nothing here loops over samples in Python or reads a value back to the host, so the training
and evaluation loops can accumulate these counts every step and synchronize once per epoch.
"""

from __future__ import annotations

import torch
from torch import Tensor


def topk_correct(logits: Tensor, targets: Tensor, ks: tuple[int, ...] = (1, 5)) -> Tensor:
    """How many targets are among the top-k scores, for each k in `ks` (int64, on the device).

    `logits` is `(N, num_classes)`; a k above `num_classes` counts as `num_classes` (every
    target is then among the top k).
    """
    if not ks or min(ks) < 1:
        raise ValueError(f"every k must be at least 1, got {ks}")
    num_classes = logits.shape[-1]
    largest_k = min(max(ks), num_classes)
    top = logits.topk(largest_k, dim=-1).indices
    # Each row has at most one hit; its running sum is 1 from the rank of the hit onwards,
    # so summing over rows gives the top-1, top-2, ... counts in one pass.
    hits_by_rank = top.eq(targets.unsqueeze(-1)).cumsum(dim=-1).sum(dim=0)
    ranks = torch.tensor([min(k, num_classes) - 1 for k in ks], device=logits.device)
    return hits_by_rank[ranks]


def reported_k(num_classes: int) -> int | None:
    """The k of the top-k accuracy shown beside top-1: 5, or fewer than the classes.

    A top-k over every class is 100% whatever the model does, so with 5 classes or fewer k is
    one less than the class count; with 2 classes only top-1 means anything (None).
    """
    k = min(5, num_classes - 1)
    return k if k >= 2 else None


def confusion_matrix(predictions: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """The `(num_classes, num_classes)` int64 counts of (true class, predicted class) pairs.

    One `bincount` over `target * num_classes + prediction`. On CUDA, `bincount` reads its
    input's range back to size the output, so call this once on the concatenated predictions
    of an evaluation rather than once per batch.
    """
    pair_index = targets.long() * num_classes + predictions.long()
    counts = torch.bincount(pair_index.flatten(), minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def per_class_accuracy(confusion: Tensor) -> Tensor:
    """The fraction of each true class predicted correctly (the recall); NaN for absent classes."""
    totals = confusion.sum(dim=1)
    return confusion.diagonal().double() / totals.double()


def most_confused(confusion: Tensor, count: int = 10) -> list[tuple[int, int, int]]:
    """The `count` largest off-diagonal cells as `(true class, predicted class, images)`.

    Pairs that never occur are left out, so the list may be shorter than `count`.
    """
    off_diagonal = confusion.clone()
    off_diagonal.fill_diagonal_(0)
    values, flat_indices = off_diagonal.flatten().topk(min(count, off_diagonal.numel()))
    num_classes = confusion.shape[1]
    return [
        (index // num_classes, index % num_classes, value)
        for value, index in zip(values.tolist(), flat_indices.tolist(), strict=True)
        if value > 0
    ]
