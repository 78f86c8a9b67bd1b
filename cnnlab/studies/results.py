"""A study's numbers, from its store alone: per-factor rows of mean ± sample std over seeds.

For each factor and value, the runs that have that value: in `one-at-a-time` mode those that
differ from the base in that factor only (the base's own runs stand for its value), in `grid`
mode every run with the value (the factor's marginal mean over the other factors). Diverged and
failed runs are counted, not averaged. Learning curves are the per-epoch means and stds.
The runs are scored on the test split, or on the validation holdout when the spec has
`validation` (the metrics keep their `test_` keys; `metric_names` labels them `val`); the final
runs of `study best` (`final:` points) stand apart from every factor.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

from cnnlab.studies.spec import FINAL_PREFIX, base_values
from cnnlab.studies.store import BEST_POINT_KEY, RunRecord, open_existing

METRICS = {"train_loss": "train loss", "train_acc": "train acc", "test_acc": "test acc"}
CURVE_METRICS = ("train_loss", "test_acc")


def metric_names(split: str) -> dict[str, str]:
    """`METRICS` with the scored split's name (`test`, or `val` for a validation study)."""
    return METRICS | {"test_acc": f"{split} acc"}


@dataclass
class Stat:
    """Mean and sample standard deviation (0 for one run) over `n` runs."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        values = [v for v in values if math.isfinite(v)]
        if not values:
            return cls(math.nan, math.nan, 0)
        return cls(fmean(values), stdev(values) if len(values) > 1 else 0.0, len(values))

    def text(self, digits: int = 3) -> str:
        return "-" if self.n == 0 else f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass
class Summary:
    """One group of runs (a factor value, the base, the best combination)."""

    value: Any
    is_base: bool
    done: int
    diverged: int
    failed: int
    pending: int
    metrics: dict[str, Stat]
    curves: dict[str, list[Stat]]

    @property
    def label(self) -> str:
        text = value_text(self.value)
        return f"{text} (base)" if self.is_base else text


@dataclass
class StudyResults:
    """Everything the report shows: the spec, the runs, per-factor summaries, provenance."""

    folder: Path
    spec: dict[str, Any]
    runs: list[RunRecord]
    epochs: dict[int, list[dict]]
    factors: dict[str, list[Summary]]
    counts: dict[str, int]
    environment: dict[str, Any] | None
    best_point: str | None = None

    @property
    def validation(self) -> float | None:
        """The fraction of the training split the study's runs are scored on (None: test)."""
        return self.spec.get("validation")

    @property
    def split(self) -> str:
        """The name of the split the study's runs are scored on: `val` or `test`."""
        return "test" if self.validation is None else "val"

    def best(self) -> dict[str, Summary]:
        """Per factor, the value with the highest mean accuracy on the scored split (validation
        with `validation`, else test); none for a factor with no finished run."""
        best = {}
        for factor, rows in self.factors.items():
            scored = [row for row in rows if row.metrics["test_acc"].n > 0]
            if scored:
                # a tie goes to the base value: only a better value changes the recipe
                best[factor] = max(
                    scored, key=lambda row: (row.metrics["test_acc"].mean, row.is_base)
                )
        return best

    def base_values(self) -> dict[str, Any]:
        return base_values(self.spec)

    def summarize(
        self, records: list[RunRecord], value: Any = None, is_base: bool = False
    ) -> Summary:
        return summarize(records, self.epochs, value, is_base)


def load_results(folder: str | Path) -> StudyResults:
    """Read a study folder's store and group its runs per factor value."""
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
    factors = {}
    for factor, values in spec["factors"].items():
        listed = list(values) + ([] if _contains(values, base[factor]) else [base[factor]])
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in listed):
            listed.sort()
        rows = []
        for value in listed:
            members = [r for r in study_runs if _has(r, factor, value, base, spec["mode"])]
            rows.append(summarize(members, epochs, value, _same(value, base[factor])))
        factors[factor] = rows
    environment = next((r.environment for r in runs if r.environment), None)
    return StudyResults(Path(folder), spec, runs, epochs, factors, counts, environment, best_point)


def summarize(
    records: list[RunRecord],
    epochs: dict[int, list[dict]],
    value: Any = None,
    is_base: bool = False,
) -> Summary:
    """Means ± stds of the finished (`done`) runs among `records`, and the other counts."""
    done = [r for r in records if r.status == "done"]
    metrics = {key: Stat.of([r.final[key] for r in done]) for key in METRICS}
    histories = [epochs[r.id] for r in done]
    length = min((len(h) for h in histories), default=0)
    curves = {
        key: [Stat.of([h[i].get(key, math.nan) for h in histories]) for i in range(length)]
        for key in CURVE_METRICS
    }
    count = {s: sum(r.status == s for r in records) for s in ("diverged", "failed")}
    pending = sum(r.status in ("pending", "running") for r in records)
    return Summary(
        value, is_base, len(done), count["diverged"], count["failed"], pending, metrics, curves
    )


def run_value(record: RunRecord, factor: str, base: dict[str, Any]) -> Any:
    return record.changes.get(factor, base[factor])


def _has(record: RunRecord, factor: str, value: Any, base: dict[str, Any], mode: str) -> bool:
    if mode == "one-at-a-time" and not set(record.changes) <= {factor}:
        return False
    return _same(run_value(record, factor, base), value)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _contains(values: list[Any], value: Any) -> bool:
    return any(_same(v, value) for v in values)


def value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
