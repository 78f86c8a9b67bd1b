"""Do the maps mean anything? The model-randomization test and deletion/insertion curves.

- Randomization (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): re-initialize the
  network's layers from the top down, cumulatively, one at a time, and compare each map with
  the trained network's by Spearman rank correlation. A method that explains the model
  decorrelates as its weights go; one that stays correlated is drawing the image, not the model.
- Deletion / insertion (Petsiuk et al. 2018, RISE): set the most important pixels to the
  baseline (zero after normalization: the training mean) in order of importance, or reveal
  them on the baseline, and follow the explained class's probability. A low area under the
  deletion curve and a high one under insertion mean the map found the pixels the class needs.
  Pixels in a random order give the reference row.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from cnnlab.explain.methods import Explanation, eval_mode, explain, optional_import

CURVE_STEPS = 20
RANDOM_ORDER = "random order"


@dataclass
class SanityReport:
    """Randomization: one row per cumulative step (the layer just re-initialized, then the mean
    correlation per method). Curves: class probability against the fraction of pixels."""

    methods: list[str]
    randomization: list[tuple[str, dict[str, float]]] = field(default_factory=list)
    deletion: dict[str, np.ndarray] = field(default_factory=dict)
    insertion: dict[str, np.ndarray] = field(default_factory=dict)

    def area(self, curve: np.ndarray) -> float:
        """Area under a curve sampled at fractions 0, 1/steps, ..., 1 (trapezoids)."""
        return float(np.trapezoid(curve, dx=1 / (len(curve) - 1)))


def randomization_units(model: nn.Module) -> list[str]:
    """The layers re-initialized one at a time, bottom up as the network declares them: its
    blocks one level down (`layer4.2`, `features.c3`) or its top-level layers with weights."""
    units: list[str] = []
    for name, module in model.named_modules():
        inside_unit = any(name.startswith(unit + ".") for unit in units)
        has_weights = any(True for _ in module.parameters())
        is_leaf = not any(True for _ in module.children())
        if name and has_weights and not inside_unit and (is_leaf or name.count(".") == 1):
            units.append(name)
    return units


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's rank correlation of two maps; 0 when either is constant (no ranking)."""
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return 0.0
    spearmanr = optional_import("scipy.stats").spearmanr
    return float(spearmanr(first.ravel(), second.ravel()).statistic)


def randomization_test(
    model: nn.Module,
    images: Tensor,
    reference: dict[str, Explanation],
    layer: str = "auto",
    seed: int = 0,
) -> list[tuple[str, dict[str, float]]]:
    """Cumulatively re-initialize a copy of `model` from the top down; after each layer, the
    mean rank correlation of each method's maps with `reference` (the trained model's)."""
    randomized = copy.deepcopy(model)
    rows: list[tuple[str, dict[str, float]]] = []
    for step, unit in enumerate(reversed(randomization_units(randomized))):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + step)
            for module in randomized.get_submodule(unit).modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        correlations = {}
        for method, trained in reference.items():
            maps = explain(randomized, images, method, trained.targets, _layer(method, layer)).maps
            pairs = zip(maps, trained.maps, strict=True)
            correlations[method] = float(np.mean([rank_correlation(a, b) for a, b in pairs]))
        rows.append((unit, correlations))
    return rows


def _layer(method: str, layer: str) -> str:
    return layer if method != "cam" else "auto"


def probability_curves(
    model: nn.Module, images: Tensor, maps: np.ndarray, targets: Sequence[int], *, insert: bool
) -> np.ndarray:
    """Mean probability of each image's target as its pixels are deleted (or inserted) in order
    of `maps`, most important first: CURVE_STEPS + 1 values from 0% to 100% of the pixels."""
    count, _, height, width = images.shape
    curves = np.zeros((count, CURVE_STEPS + 1))
    for index in range(count):
        order = torch.from_numpy(np.argsort(-maps[index].ravel(), kind="stable").copy())
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(order.numel())
        fractions = torch.arange(CURVE_STEPS + 1) / CURVE_STEPS
        shown = ranks[None, :] < (fractions[:, None] * order.numel()).round()  # (steps, HW)
        if not insert:
            shown = ~shown
        masks = shown.view(-1, 1, height, width).to(images.device, images.dtype)
        with eval_mode(model), torch.no_grad():
            probabilities = model(images[index] * masks).float().softmax(dim=-1)
        curves[index] = probabilities[:, targets[index]].cpu().numpy()
    return curves.mean(axis=0)


def sanity_checks(
    model: nn.Module,
    images: Tensor,
    methods: Sequence[str],
    target: object = "predicted",
    layer: str = "auto",
    seed: int = 0,
) -> SanityReport:
    """Both tests for `methods` on `images` (normalized (N, C, H, W))."""
    reference = {m: explain(model, images, m, target, _layer(m, layer)) for m in methods}
    report = SanityReport(list(methods))
    report.randomization = randomization_test(model, images, reference, layer, seed)
    targets = next(iter(reference.values())).targets
    generator = np.random.default_rng(seed)
    random_maps = generator.random((len(images), *images.shape[-2:]))
    orders = {**{m: e.maps for m, e in reference.items()}, RANDOM_ORDER: random_maps}
    for name, maps in orders.items():
        report.deletion[name] = probability_curves(model, images, maps, targets, insert=False)
        report.insertion[name] = probability_curves(model, images, maps, targets, insert=True)
    return report


def sanity_rows(report: SanityReport) -> tuple[list[list[str]], list[list[str]]]:
    """The two tables as rows of text: randomization (step, layer, one column per method) and
    areas (method, deletion AUC, insertion AUC)."""
    randomization = [
        [str(step), unit, *(_number(values[m]) for m in report.methods)]
        for step, (unit, values) in enumerate(report.randomization, start=1)
    ]
    areas = [
        [name, _number(report.area(report.deletion[name])), _number(report.area(curve))]
        for name, curve in report.insertion.items()
    ]
    return randomization, areas


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.3f}"


def sanity_markdown(report: SanityReport) -> str:
    """Both tables as Markdown."""
    randomization, areas = sanity_rows(report)
    lines = [
        "## Model randomization (Spearman rank correlation with the trained model's maps)",
        "",
        "| step | re-initialized (cumulative, top down) | " + " | ".join(report.methods) + " |",
        "|---:|---|" + "---:|" * len(report.methods),
        *("| " + " | ".join(row) + " |" for row in randomization),
        "",
        "## Deletion / insertion (area under the explained class's probability curve)",
        "",
        "| pixel order | deletion AUC (lower is better) | insertion AUC (higher is better) |",
        "|---|---:|---:|",
        *("| " + " | ".join(row) + " |" for row in areas),
        "",
    ]
    return "\n".join(lines)


def sanity_csv(report: SanityReport) -> str:
    """Both tests in one long table: test, step, layer, method, value."""
    lines = ["test,step,layer,method,value"]
    for step, (unit, values) in enumerate(report.randomization, start=1):
        lines += [f"randomization,{step},{unit},{m},{values[m]:.6f}" for m in report.methods]
    for name in report.insertion:
        lines.append(f"deletion_auc,,,{name},{report.area(report.deletion[name]):.6f}")
        lines.append(f"insertion_auc,,,{name},{report.area(report.insertion[name]):.6f}")
    return "\n".join(lines) + "\n"
