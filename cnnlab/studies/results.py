"""A study's numbers, from its folder alone: groups of runs summarized over seeds, against the base.

A group (a point, a factor's value, a grid cell) gives a `Stat` (`cnnlab.reporting`) over its
finished seeds of the last epoch's training loss and accuracy and of the scored accuracy: the
test split's, or the validation holdout's when the spec has `validation` (stored as `val_acc`;
stores written before that name kept `test_acc`). Diverged and failed runs are counted, not
averaged. Learning curves are the per-epoch means and stds.

- `one-at-a-time`: per factor, each value's own runs (those that differ from the base in that
  factor only; the base's runs stand for its value).
- `grid`: every cell (combination of values) with its runs, and per factor the **marginal
  mean** of each value over the other factors (every run with the value), labelled as such.

Each value (one-at-a-time) or cell (grid) is set against the base: the difference of mean
scored accuracies with Welch's 95% interval, **significant** when the interval leaves out 0,
else **within noise**; **at chance** when its accuracy lies within 1 point of 1/classes. The
best values are those significantly better than the base (`StudyResults.best`); the final runs
of `study best` (`final:` points) stand apart from every factor.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.reporting import Difference, Stat, difference
from cnnlab.studies.spec import BASE_POINT, FINAL_PREFIX, base_values
from cnnlab.studies.store import BEST_POINT_KEY, RunRecord, open_existing

METRICS = ("train_loss", "train_acc", "scored_acc")
CURVE_METRICS = ("train_loss", "scored_acc")
CHANCE_MARGIN = 0.01  # one point of accuracy


def metric_names(split: str) -> dict[str, str]:
    """Each metric's column name; the scored accuracy is named for its split (`test`, `val`)."""
    return {"train_loss": "train loss", "train_acc": "train acc", "scored_acc": f"{split} acc"}


def scored(row: dict, metric: str) -> float:
    """A run's value of `metric` from its final or epoch row (NaN when absent)."""
    names = ("val_acc", "test_acc") if metric == "scored_acc" else (metric,)
    value = next((row[name] for name in names if row.get(name) is not None), None)
    return math.nan if value is None else float(value)


@dataclass
class Summary:
    """One group of runs: a factor's value, a grid cell, the base, or a named point.

    `value` is the factor's value (a dict of every factor's value for a grid cell).
    """

    value: Any
    label: str
    is_base: bool
    done: int
    diverged: int
    failed: int
    pending: int
    metrics: dict[str, Stat]
    curves: dict[str, list[Stat]]
    against_base: Difference | None = None
    at_chance: bool = False

    def verdict(self) -> str:
        """`base`, `significant`, `within noise` or `too few runs`; `; at chance` appended."""
        if self.is_base:
            text = "base"
        elif self.against_base is None:
            text = "too few runs"
        else:
            text = "significant" if self.against_base.significant else "within noise"
        return text + ("; at chance" if self.at_chance else "")


@dataclass
class StudyResults:
    """Everything the report shows: the spec, the runs, the groups, provenance."""

    folder: Path
    spec: dict[str, Any]
    runs: list[RunRecord]
    epochs: dict[int, list[dict]]
    counts: dict[str, int]
    environment: dict[str, Any] | None
    classes: int | None
    base: Summary
    factors: dict[str, list[Summary]]
    cells: list[Summary] = field(default_factory=list)
    best_point: str | None = None

    @property
    def grid(self) -> bool:
        return self.spec["mode"] == "grid"

    @property
    def validation(self) -> float | None:
        """The fraction of the training split the study's runs are scored on (None: test)."""
        return self.spec.get("validation")

    @property
    def split(self) -> str:
        """The name of the split the study's runs are scored on: `val` or `test`."""
        return "test" if self.validation is None else "val"

    def candidates(self) -> list[Summary]:
        """What is set against the base: each factor's other values, or the grid's cells."""
        if self.grid:
            return [cell for cell in self.cells if not cell.is_base]
        return [row for rows in self.factors.values() for row in rows if not row.is_base]

    def best(self) -> list[Summary]:
        """The values (per factor) or the cell significantly better than the base, best first
        within each factor; empty when no value beats the base."""
        if self.grid:
            better = [s for s in self.candidates() if s.against_base and s.against_base.low > 0]
            return sorted(better, key=lambda s: s.metrics["scored_acc"].mean)[-1:]
        return [winner for winner in map(self._best_of, self.factors) if winner is not None]

    def _best_of(self, factor: str) -> Summary | None:
        """One-at-a-time: the factor's best value significantly better than the base, or None."""
        better = [
            row
            for row in self.factors[factor]
            if not row.is_base and row.against_base and row.against_base.low > 0
        ]
        return max(better, key=lambda row: row.metrics["scored_acc"].mean, default=None)

    def best_changes(self) -> dict[str, Any]:
        """The combination of the best values: factor -> value (empty: keep the base)."""
        if self.grid:
            return dict(self.best()[0].value) if self.best() else {}
        winners = {factor: self._best_of(factor) for factor in self.factors}
        return {factor: row.value for factor, row in winners.items() if row is not None}

    def base_values(self) -> dict[str, Any]:
        return base_values(self.spec)

    def point(self, name: str, seeds: list[int] | None = None, label: str = "") -> Summary:
        """The runs of point `name` (of `seeds`, if given) summarized."""
        records = [r for r in self.runs if r.point == name and (seeds is None or r.seed in seeds)]
        return summarize(records, self.epochs, label=label or name)


def load_results(folder: str | Path) -> StudyResults:
    """Read a study folder's store and group its runs (see the module doc)."""
    folder = Path(folder)
    store = open_existing(folder)
    try:
        spec = store.get_meta("spec")
        runs = store.runs()
        epochs = {record.id: store.epochs(record.id) for record in runs}
        counts = store.counts()
        best_point = store.get_meta(BEST_POINT_KEY)
    finally:
        store.close()
    base = base_values(spec)
    study_runs = [r for r in runs if not r.point.startswith(FINAL_PREFIX)]
    base_summary = summarize(
        [r for r in study_runs if r.point == BASE_POINT], epochs, base, "base", is_base=True
    )
    grid = spec["mode"] == "grid"
    factors, cells = {}, []
    for factor, values in spec["factors"].items():
        listed = list(values)
        if not grid and not any(_same(v, base[factor]) for v in listed):
            listed.append(base[factor])
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in listed):
            listed.sort()
        rows = []
        for value in listed:
            members = [r for r in study_runs if _has(r, factor, value, base, grid)]
            is_base = not grid and _same(value, base[factor])  # a marginal mean is no base
            label = value_text(value) + (" (base)" if is_base else "")
            rows.append(summarize(members, epochs, value, label, is_base=is_base))
        factors[factor] = rows
    if grid:
        by_point: dict[str, list[RunRecord]] = {}
        for record in study_runs:
            by_point.setdefault(record.point, []).append(record)
        for name, records in by_point.items():
            value = {f: run_value(records[0], f, base) for f in spec["factors"]}
            cells.append(summarize(records, epochs, value, name, is_base=name == BASE_POINT))
    classes = _classes(folder)
    groups = [*cells] if grid else [row for rows in factors.values() for row in rows]
    for group in [*groups, base_summary]:
        _set_against_base(group, base_summary, classes)
    return StudyResults(
        folder, spec, runs, epochs, counts, _environment(runs), classes, base_summary,
        factors, cells, best_point,
    )  # fmt: skip


def summarize(
    records: list[RunRecord],
    epochs: dict[int, list[dict]],
    value: Any = None,
    label: str = "",
    *,
    is_base: bool = False,
) -> Summary:
    """Means ± stds of the finished (`done`) runs among `records`, and the other counts."""
    done = [r for r in records if r.status == "done"]
    metrics = {key: Stat.of(scored(r.final, key) for r in done) for key in METRICS}
    histories = [epochs[r.id] for r in done]
    length = min((len(h) for h in histories), default=0)
    curves = {
        key: [Stat.of(scored(h[i], key) for h in histories) for i in range(length)]
        for key in CURVE_METRICS
    }
    count = {s: sum(r.status == s for r in records) for s in ("diverged", "failed")}
    pending = sum(r.status in ("pending", "running") for r in records)
    return Summary(
        value, label, is_base, len(done), count["diverged"], count["failed"], pending, metrics,
        curves,
    )  # fmt: skip


def _set_against_base(group: Summary, base: Summary, classes: int | None) -> None:
    accuracy = group.metrics["scored_acc"]
    if not group.is_base:
        group.against_base = difference(accuracy, base.metrics["scored_acc"])
    if classes and accuracy.n:
        group.at_chance = abs(accuracy.mean - 1 / classes) <= CHANCE_MARGIN


def _classes(folder: Path) -> int | None:
    """The number of classes, from the study's prepared data (None before any is prepared)."""
    for meta in sorted((folder / "data").glob("*/meta.json")):
        return len(json.loads(meta.read_text())["classes"])
    return None


def _environment(runs: list[RunRecord]) -> dict[str, Any] | None:
    return next((r.environment for r in runs if r.environment), None)


def run_value(record: RunRecord, factor: str, base: dict[str, Any]) -> Any:
    return record.changes.get(factor, base[factor])


def _has(record: RunRecord, factor: str, value: Any, base: dict[str, Any], grid: bool) -> bool:
    if not grid and not set(record.changes) <= {factor}:
        return False
    return _same(run_value(record, factor, base), value)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
