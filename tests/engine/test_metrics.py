"""Top-k counts, confusion matrices and per-class accuracy against direct computations."""

from __future__ import annotations

import math

import pytest
import torch

from cnnlab.engine.metrics import (
    confusion_matrix,
    most_confused,
    per_class_accuracy,
    topk_correct,
)


def rank_of_target(logits: torch.Tensor, targets: torch.Tensor) -> list[int]:
    """1-based rank of each target among its row's scores, by sorting each row in Python."""
    ranks = []
    for row, target in zip(logits.tolist(), targets.tolist(), strict=True):
        order = sorted(range(len(row)), key=lambda index: -row[index])
        ranks.append(order.index(target) + 1)
    return ranks


def test_topk_correct_matches_ranks_computed_by_sorting() -> None:
    torch.manual_seed(0)
    logits = torch.randn(200, 12)
    targets = torch.randint(0, 12, (200,))
    ranks = rank_of_target(logits, targets)

    counts = topk_correct(logits, targets, ks=(1, 3, 5, 12))

    assert counts.dtype == torch.int64
    assert counts.tolist() == [sum(r <= k for r in ranks) for k in (1, 3, 5, 12)]


def test_topk_correct_caps_k_at_the_number_of_classes() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    targets = torch.tensor([1, 2])
    assert topk_correct(logits, targets, ks=(1, 5)).tolist() == [1, 2]


def test_topk_correct_rejects_k_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        topk_correct(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), ks=(0,))


def test_confusion_matrix_counts_each_pair() -> None:
    torch.manual_seed(1)
    targets = torch.randint(0, 5, (300,))
    predictions = torch.randint(0, 5, (300,))

    matrix = confusion_matrix(predictions, targets, num_classes=5)

    expected = torch.zeros(5, 5, dtype=torch.int64)
    for true, predicted in zip(targets.tolist(), predictions.tolist(), strict=True):
        expected[true, predicted] += 1
    assert matrix.dtype == torch.int64
    assert torch.equal(matrix, expected)


def test_confusion_matrix_keeps_absent_classes() -> None:
    matrix = confusion_matrix(torch.tensor([0, 0]), torch.tensor([0, 1]), num_classes=4)
    assert matrix.shape == (4, 4)
    assert matrix.sum().item() == 2
    assert matrix[0, 0].item() == 1 and matrix[1, 0].item() == 1


def test_per_class_accuracy_is_the_row_recall() -> None:
    confusion = torch.tensor([[8, 2, 0], [1, 1, 2], [0, 0, 0]])
    accuracy = per_class_accuracy(confusion).tolist()
    assert accuracy[0] == pytest.approx(0.8)
    assert accuracy[1] == pytest.approx(0.25)
    assert math.isnan(accuracy[2])  # no images of class 2


def test_most_confused_lists_the_largest_off_diagonal_cells() -> None:
    confusion = torch.tensor([[50, 3, 7], [0, 40, 1], [9, 0, 30]])
    assert most_confused(confusion, count=3) == [(2, 0, 9), (0, 2, 7), (0, 1, 3)]
    assert most_confused(torch.eye(3, dtype=torch.int64) * 5) == []
